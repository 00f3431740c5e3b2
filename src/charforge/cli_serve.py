"""`charforge serve` and `charforge chat`: a workspace's characters over HTTP, or in
the terminal."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from typing import Annotated

import typer

from charforge.cli_common import CharacterArg, WorkspaceOption, err, find_workspace, out
from charforge.errors import ConfigError

API_KEY_ENV = "CHARFORGE_API_KEY"


def _checkpoints(values: list[str]) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise ConfigError(f"--checkpoint {value!r}: write CHARACTER=FOLDER")
        pairs[name] = folder
    return pairs


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: Annotated[str, typer.Option(help="address to bind (another than 127.0.0.1 needs "
                                           "an API key)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port")] = 8000,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="model that plays characters with no trained run")] = None,
    api_key_env: Annotated[str, typer.Option(
        help="environment variable holding the bearer API key clients must send")] = API_KEY_ENV,
    checkpoint: Annotated[list[str] | None, typer.Option(
        help="CHARACTER=FOLDER: serve a released Character-LLM checkpoint (repeatable)")] = None,
    cors_origin: Annotated[list[str] | None, typer.Option(
        help="allow this browser origin (repeatable; CORS is off without)")] = None,
    max_batch: Annotated[int | None, typer.Option(min=1, help="requests decoded together "
                                                              "on a local model")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Serve the workspace's characters: an OpenAI-compatible API and a web chat page.

    Each character is a model id (and each trained run, `<character>/<run>`); characters
    with no trained run are played by --model. The API key is read from the environment
    (never a flag: it would show in the process list)."""
    import uvicorn

    from charforge.serve.app import ServeSettings, create_app

    api_key = os.environ.get(api_key_env) or None
    if not _loopback(host) and not api_key:
        raise ConfigError(f"binding {host} exposes the server beyond this machine: set "
                          f"{api_key_env} to an API key first")
    ws = find_workspace(workspace)
    settings = ServeSettings(model=model, api_key=api_key,
                             cors_origins=list(cors_origin or []),
                             checkpoints=_checkpoints(list(checkpoint or [])),
                             max_batch=max_batch)
    app = create_app(ws, settings)
    catalogue = app.state.catalogue
    models, characters = len(catalogue.models), len(catalogue.characters())
    err.print(f"serving {models} model{'s' * (models != 1)} of {characters} "
              f"character{'s' * (characters != 1)} on http://{host}:{port} (web page at /, "
              "API at /v1"
              f"{', API key required' if api_key else ''}); loading models…")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def chat(
    character: CharacterArg,
    model_id: Annotated[str | None, typer.Option(
        "--model", "-m", help="a served model id: CHARACTER/RUN (default: the latest run, or "
                              "prompted)")] = None,
    prompted_model: Annotated[str | None, typer.Option(
        "--prompted-model", help="model that plays a character with no trained run")] = None,
    location: Annotated[str, typer.Option(help="where the scene is")] = "",
    status: Annotated[str, typer.Option(help="what is happening")] = "",
    stage: Annotated[str | None, typer.Option(help="time stage, by label or token")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="longest reply, in tokens")] = 256,
    temperature: Annotated[float, typer.Option(min=0.0, max=2.0)] = 0.7,
    seed: Annotated[int | None, typer.Option(help="sampling seed")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Talk with a character in the terminal (replies stream, thinking dimmed).

    An empty line or Ctrl-D ends the conversation."""
    from charforge.llm.base import ChatMessage, Sampling
    from charforge.serve.catalogue import Catalogue, Scene

    ws = find_workspace(workspace)
    who = ws.load_character(character)
    catalogue = Catalogue.from_workspace(ws, model=prompted_model)
    served = catalogue.get(model_id or who.slug)
    scene = Scene(location=location, status=status, stage=stage)
    try:
        served.stage_token(scene)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    sampling = Sampling(temperature=temperature, max_tokens=max_tokens, seed=seed)
    err.print(f"{who.name} ({served.id}, {served.serving}); an empty line ends")
    history: list[ChatMessage] = []

    async def reply() -> str:
        said: list[str] = []
        thinking = False
        async for piece in served.stream(history, scene, sampling):
            kind = getattr(piece, "kind", None)
            if kind == "reasoning":
                out.print(piece.text, style="dim", end="", markup=False, highlight=False)
                thinking = True
            elif kind == "content":
                if thinking:
                    out.print()
                    thinking = False
                out.print(piece.text, end="", markup=False, highlight=False)
                said.append(piece.text)
        out.print()
        return "".join(said).strip()

    async def session() -> None:
        try:
            while True:
                try:
                    line = await asyncio.to_thread(input, "you> ")
                except EOFError:
                    break
                if not line.strip():
                    break
                history.append(ChatMessage(role="user", content=line))
                out.print(f"{who.short_name}> ", end="", style="bold", markup=False)
                history.append(ChatMessage(role="assistant", content=await reply()))
        finally:
            await catalogue.aclose()

    asyncio.run(session())

