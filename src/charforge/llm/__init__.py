"""Chat models: one protocol (`base.ChatModel`), several backends."""
