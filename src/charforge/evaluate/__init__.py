"""Evaluation: interviews of agents, judges, judge-free metrics and the report.

Interviews and judgments are stages like any other (recorded in the store, resumable,
never repeated); an agent is anything behind the `ChatModel` protocol.
"""
