"""`charforge export vllm|ollama`: a trained character as the engines users already scale
with serve it, written as files and one command, never run from here.

A LoRA run is served as an adapter on its base (vLLM: `--enable-lora --lora-modules`,
Ollama: `ADAPTER`). An adapter that added tokens to the vocabulary (stage tokens) cannot
be: vLLM's LoRA loads no new vocabulary, and Ollama's adapter import takes LoRA weights
only. Such a run is served as its merged model (`charforge train merge`), as is a full
fine-tune (its run folder is a whole model). A trained agent's system message is
`render.meta_prompt` under its recipe's serving preset, the stage token first
(`render.stage_marked`); `prompted` serves the bare base under the character's roleplay
system message instead. Clients send the system message: vLLM keeps none per model.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from charforge.character import Character
from charforge.errors import CharforgeError
from charforge.render import meta_prompt, stage_marked
from charforge.roleplay import ASK_SAMPLING, roleplay_system_prompt
from charforge.train.base import Base, BaseNotFoundError, resolve_base
from charforge.train.merge import MERGED_SUFFIX
from charforge.train.runs import RunRecord, find_run

Engine = Literal["vllm", "ollama"]
# vLLM's accepted --max-lora-rank values (vllm/config/lora.py MaxLoRARanks); defaults:
# --max-loras 1, --max-lora-rank 16, both too small for many characters.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
VLLM_HOST, VLLM_PORT = "127.0.0.1", 8000
EXPORTS_DIR = "exports"
SYSTEM_PROMPT_FILE = "system_prompt.txt"
CHAT_TEMPLATE_FILE = "chat_template.jinja"

# Ollama's Go template equal to a ChatML chat template (<|im_start|>role\n...<|im_end|>\n,
# then <|im_start|>assistant\n to answer). A last assistant message is continued, not closed.
OLLAMA_CHATML = (
    '{{- range $i, $_ := .Messages }}\n'
    '{{- $last := eq (len (slice $.Messages $i)) 1 -}}\n'
    '<|im_start|>{{ .Role }}\n'
    '{{ .Content }}\n'
    '{{- if or (ne .Role "assistant") (not $last) }}<|im_end|>\n'
    '{{ end }}\n'
    '{{- if and $last (ne .Role "assistant") }}<|im_start|>assistant\n'
    '{{ end }}\n'
    '{{- end }}'
)
_PROBE = [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
          {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]


@dataclass(frozen=True)
class ServedAgent:
    """One character as an engine serves it: the base and a LoRA adapter on it, or a
    whole model folder (merged run, full fine-tune), and the system message."""

    name: str  # the model name clients ask for: the character's id
    character: Character
    system_prompt: str
    base: Base
    base_path: str  # what the engine loads as the base: a folder, a .gguf file, a hub id
    adapter: Path | None = None
    rank: int | None = None
    model: Path | None = None  # a whole model served instead of base + adapter
    run: RunRecord | None = None
    tokenizer: str = ""  # where the chat template and end-of-turn tokens come from
    tokenizer_options: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.run.character}/{self.run.run}" if self.run else self.name


# -- which run, which weights, which system message --------------------------------------
def served_agent(workspace: Any, character_name: str, engine: Engine, *,
                 run: str | None = None, stage: str | None = None, location: str = "",
                 status: str = "", prompted: bool = False,
                 base: str | None = None) -> ServedAgent:
    """How `engine` serves the character: its latest finished run (or `run`) with the
    system message it was trained under, or (`prompted`) the base under the roleplay
    system message."""
    character = workspace.load_character(character_name)
    if prompted:
        if run is not None or stage is not None:
            flag = "--run" if run is not None else "--stage"
            raise CharforgeError(f"{flag} applies to a trained agent; --prompted serves the "
                                 "base model under the roleplay system prompt")
        the_base = resolve_base(workspace, base)
        if engine == "vllm" and the_base.load_options.get("gguf_file"):
            raise CharforgeError(f"--base {the_base.name} is a GGUF file; vLLM serves Hugging "
                                 "Face model folders: name one")
        system = roleplay_system_prompt(character, location=location or None,
                                        status=status or None)
        return ServedAgent(name=character.slug, character=character, system_prompt=system,
                           base=the_base, base_path=_base_path(the_base, engine),
                           tokenizer=the_base.source, tokenizer_options=the_base.load_options)
    if base is not None:
        raise CharforgeError("--base applies to --prompted; a trained agent runs on the base "
                             "it was trained on")
    folder, record = find_run(workspace.root, character.slug, run)
    label = f"{record.character}/{record.run}"
    if not record.model.get("backend"):
        raise CharforgeError(f"{label} learned Character-LLM's prompted text format, not "
                             "chat: no chat engine asks it as it was taught; train a chat run "
                             f"(charforge train sft {character.slug} --format chat)")
    token = stage_token(character, stage) if stage is not None else None
    notes = _stage_notes(label, record, character, token)
    system = stage_marked(meta_prompt(character, location, status, _preset(record)), token)
    the_base = _run_base(workspace, record)
    if the_base.identity != record.base.get("identity"):
        notes.append(f"the base {the_base.name} changed since {label} was trained on it: "
                     "the adapter may not fit it")
    common = dict(name=character.slug, character=character, system_prompt=system,
                  base=the_base, base_path=_base_path(the_base, engine), run=record)
    if "adapter" not in record.model:  # a full fine-tune: the run folder is the model
        return ServedAgent(**common, model=folder, tokenizer=str(folder),
                           notes=tuple(notes))
    why = _why_merged(folder, the_base, engine)
    if why is None:
        has_own = (folder / "tokenizer_config.json").is_file()
        return ServedAgent(**common, adapter=folder, rank=adapter_rank(folder),
                           tokenizer=str(folder) if has_own else the_base.source,
                           tokenizer_options={} if has_own else the_base.load_options,
                           notes=tuple(notes))
    merged = folder.with_name(folder.name + MERGED_SUFFIX)
    if not (merged / "config.json").is_file():
        raise CharforgeError(f"{label} {why}: serve its merged model; run charforge train "
                             f"merge {character.slug} --run {record.run} first")
    return ServedAgent(**common, model=merged, tokenizer=str(merged), notes=tuple(notes))


def _run_base(workspace: Any, record: RunRecord) -> Base:
    """The run's base, found as training found it (by its name), else where training
    read it (a folder named by a relative path, from another folder)."""
    try:
        return resolve_base(workspace, record.base.get("name"))
    except BaseNotFoundError:
        source = record.base.get("source")
        if not source or not Path(source).is_dir():
            raise
        return resolve_base(workspace, source)


def stage_token(character: Character, stage: str) -> str:
    """The token of the character's stage named by its label (any case) or its token."""
    for candidate in character.stages:
        if stage in (candidate.token, candidate.label) or stage.lower() == candidate.label.lower():
            return candidate.token
    known = ", ".join(f"{s.label} ({s.token})" for s in character.stages) or "none"
    raise CharforgeError(f"{character.short_name} has no stage {stage!r}; stages: {known}")


def _stage_notes(label: str, record: RunRecord, character: Character,
                 token: str | None) -> list[str]:
    trained_with = bool(record.data.get("stage_tokens"))
    if trained_with and token is None and character.stages:
        labels = ", ".join(s.label for s in character.stages)
        return [f"{label} was trained with time stages: pass --stage ({labels}) to open the "
                "system prompt with one, as in training"]
    if token is not None and not trained_with:
        return [f"{label} was trained without stage tokens: {token} is plain text to it"]
    return []


def _preset(record: RunRecord) -> Any:
    from charforge.recipes import RECIPES

    recipe = RECIPES.get(record.recipe)
    return recipe.serving.meta_prompt if recipe is not None else "charforge"


def _base_path(base: Base, engine: Engine) -> str:
    """The base as `engine` loads it: a model folder, a .gguf file (Ollama) or a hub id
    (vLLM reads the Hugging Face cache; Ollama needs the snapshot's folder)."""
    gguf = base.load_options.get("gguf_file")
    if gguf:
        return str(Path(base.source) / gguf)
    if base.load_options.get("local_files_only") and engine == "ollama":
        from huggingface_hub import snapshot_download

        return snapshot_download(base.source, local_files_only=True)
    return base.source


def adapter_rank(folder: Path) -> int:
    """The LoRA rank of the adapter in `folder` (the largest, with per-module ranks)."""
    config = _adapter_config(folder)
    ranks = [int(config.get("r") or 0), *map(int, (config.get("rank_pattern") or {}).values())]
    return max(ranks)


def _adapter_config(folder: Path) -> dict[str, Any]:
    path = folder / "adapter_config.json"
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise CharforgeError(f"{path}: unreadable adapter config ({exc}); train the run "
                             "again") from None


def _why_merged(folder: Path, base: Base, engine: Engine) -> str | None:
    """Why `engine` cannot put this adapter on its base (None: it can)."""
    config = _adapter_config(folder)
    if config.get("trainable_token_indices"):
        return "adds tokens to the vocabulary (stage tokens), which a LoRA adapter cannot " \
               f"bring to {engine}"
    if config.get("modules_to_save"):
        return f"trains whole modules ({', '.join(config['modules_to_save'])}), which " \
               f"{engine}'s LoRA cannot load"
    if (folder / "tokenizer_config.json").is_file() and \
            _vocabulary(str(folder)) > _vocabulary(base.source, base.load_options):
        return f"has a larger vocabulary than its base, which {engine}'s LoRA cannot add"
    if engine == "vllm" and base.load_options.get("gguf_file"):
        return "is on a GGUF base, and vLLM serves LoRA adapters on Hugging Face model " \
               "folders"
    return None


# -- the chat template -------------------------------------------------------------------
def load_tokenizer(source: str, options: dict[str, Any] | None = None) -> Any:
    from transformers import AutoTokenizer

    from charforge.llm.local import quiet_progress_bars

    try:
        with quiet_progress_bars():
            return AutoTokenizer.from_pretrained(source, **(options or {}))
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CharforgeError(f"cannot load the tokenizer of {source}: {first}") from None


def _vocabulary(source: str, options: dict[str, Any] | None = None) -> int:
    return len(load_tokenizer(source, options))


def chat_template(tokenizer: Any, where: str) -> str:
    """The model's own chat template (the default one of several)."""
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    if not template:
        raise CharforgeError(f"{where}: its tokenizer has no chat template; export an instruct "
                             "model")
    return str(template)


def ollama_template(tokenizer: Any) -> tuple[str | None, str]:
    """(Go template, '') for a ChatML chat template (its rendering of a probe conversation
    equals plain ChatML's), else (None, why not)."""
    template = chat_template(tokenizer, "the model")
    if "<|im_start|>" not in template or "<|im_end|>" not in template:
        return None, "its chat template is not ChatML (<|im_start|>/<|im_end|>)"
    try:
        text = tokenizer.apply_chat_template(_PROBE, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # a template's own raise_exception, a missing variable
        return None, f"its chat template does not render a plain conversation ({exc})"
    chatml = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in _PROBE)
    if text != chatml + "<|im_start|>assistant\n":
        return None, "its chat template renders a conversation otherwise than plain ChatML " \
                     "(other markers, a default system prompt, tools, thinking)"
    return OLLAMA_CHATML, ""


def stop_tokens(tokenizer: Any, *, chatml: bool) -> list[str]:
    """The end-of-turn strings: ChatML's markers, and the tokenizer's end of sequence."""
    stops = ["<|im_end|>", "<|im_start|>"] if chatml else []
    eos = getattr(tokenizer, "eos_token", None)
    if eos and eos not in stops:
        stops.append(str(eos))
    return stops


# -- vLLM --------------------------------------------------------------------------------
def vllm_lora_rank(rank: int) -> int:
    """The smallest --max-lora-rank vLLM accepts that holds `rank`."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise CharforgeError(f"LoRA rank {rank} is above vLLM's largest --max-lora-rank "
                         f"({VLLM_LORA_RANKS[-1]}); merge the run (charforge train merge) "
                         "and serve the merged model")


def vllm_command(agents: Sequence[ServedAgent], *, chat_template_path: Path | str,
                 host: str = VLLM_HOST, port: int = VLLM_PORT) -> str:
    """One `vllm serve` line for `agents` (shell-quoted): LoRA adapters on their shared
    base, or one whole model (merged or fully trained), or the bare base for prompted
    agents (their names as aliases)."""
    if not agents:
        raise CharforgeError("name at least one character to export")
    _check_one_base(agents)
    whole = [agent for agent in agents if agent.model is not None]
    if whole and len(agents) > 1:
        raise CharforgeError(
            f"{whole[0].label} is served as a whole model ({whole[0].model}), and one vLLM "
            "server serves one model: export it alone (charforge export vllm "
            f"{whole[0].name})")
    if whole:
        words = ["vllm", "serve", str(whole[0].model), "--served-model-name", whole[0].name]
    elif all(agent.adapter is None for agent in agents):  # prompted: the base, by name
        words = ["vllm", "serve", agents[0].base_path, "--served-model-name",
                 *(agent.name for agent in agents)]
    else:
        bare = [agent.label for agent in agents if agent.adapter is None]
        if bare:
            raise CharforgeError(f"{bare[0]} has no adapter: export prompted and trained "
                                 "characters apart")
        modules = [_lora_module(agent) for agent in agents]
        rank = vllm_lora_rank(max(agent.rank or 1 for agent in agents))
        words = ["vllm", "serve", agents[0].base_path, "--enable-lora",
                 "--lora-modules", *modules, "--max-loras", str(len(modules)),
                 "--max-lora-rank", str(rank)]
    words += ["--chat-template", str(chat_template_path), "--host", host, "--port", str(port)]
    return shlex.join(words)


def _lora_module(agent: ServedAgent) -> str:
    path = str(agent.adapter)
    if "=" in path:  # NAME=PATH splits at '='; the JSON form takes any path
        return json.dumps({"name": agent.name, "path": path})
    return f"{agent.name}={path}"


def _check_one_base(agents: Sequence[ServedAgent]) -> None:
    first = agents[0]
    for agent in agents[1:]:
        if (agent.base_path, agent.base.load_options) != (first.base_path,
                                                          first.base.load_options):
            raise CharforgeError(
                f"{first.label} runs on {first.base_path} and {agent.label} on "
                f"{agent.base_path}: one vLLM server has one base; export them apart")
    names = [agent.name for agent in agents]
    if len(set(names)) < len(names):
        raise CharforgeError("a character is named twice; name each once")


@dataclass(frozen=True)
class VllmExport:
    folder: Path
    command: str
    agents: list[ServedAgent]
    files: list[Path]
    notes: list[str]


def export_vllm(workspace: Any, characters: Sequence[str], *, out: Path | None = None,
                runs: Sequence[str] = (), stage: str | None = None, location: str = "",
                status: str = "", prompted: bool = False, base: str | None = None,
                host: str = VLLM_HOST, port: int = VLLM_PORT) -> VllmExport:
    """Write the chat template, each character's system prompt, `serve.sh` and
    `client.py` into `out` (default `exports/<character>/vllm/`); return the command."""
    if not characters:
        raise CharforgeError("name at least one character to export")
    chosen = _runs_by_character(workspace, characters, runs)
    agents = [served_agent(workspace, name, "vllm", run=chosen[name], stage=stage,
                           location=location, status=status, prompted=prompted, base=base)
              for name in characters]
    _check_one_base(agents)
    templates = {chat_template(load_tokenizer(a.tokenizer, a.tokenizer_options), a.tokenizer)
                 for a in agents}
    if len(templates) > 1:
        raise CharforgeError("these characters' tokenizers hold different chat templates; "
                             "vLLM takes one: export them apart")
    folder = Path(out) if out else default_folder(workspace, agents, "vllm")
    template_path = folder / CHAT_TEMPLATE_FILE
    command = vllm_command(agents, chat_template_path=template_path.resolve(), host=host,
                           port=port)
    prompts = {agent.name: system_prompt_file(agents, agent) for agent in agents}
    files = {CHAT_TEMPLATE_FILE: templates.pop(),
             "serve.sh": f"#!/bin/sh\n# charforge export vllm {' '.join(a.name for a in agents)}"
                         f"\nexec {command}\n",
             "client.py": client_snippet(prompts, agents[0].base, host=host, port=port),
             **{prompts[a.name]: a.system_prompt for a in agents}}
    written = write_files(folder, files)
    (folder / "serve.sh").chmod(0o755)
    return VllmExport(folder=folder, command=command, agents=agents, files=written,
                      notes=[note for agent in agents for note in agent.notes])


def system_prompt_file(agents: Sequence[ServedAgent], agent: ServedAgent) -> str:
    """`system_prompt.txt`; `<character>.system_prompt.txt` when several are exported."""
    return SYSTEM_PROMPT_FILE if len(agents) == 1 else f"{agent.name}.{SYSTEM_PROMPT_FILE}"


def client_snippet(prompts: dict[str, str], base: Base, *, host: str = VLLM_HOST,
                   port: int = VLLM_PORT) -> str:
    """A Python script asking each character once through the OpenAI client."""
    sampling = f"temperature={ASK_SAMPLING.temperature}, max_tokens={ASK_SAMPLING.max_tokens}"
    penalty = base.entry_options.get("repetition_penalty")
    if penalty and penalty != 1.0:
        sampling += f",\n        extra_body={{'repetition_penalty': {penalty}}}"
    return f'''"""Ask the characters vLLM serves (./serve.sh) through the OpenAI client:
pip install openai; python client.py. The system prompt goes with every request."""

from pathlib import Path

from openai import OpenAI

HERE = Path(__file__).parent
client = OpenAI(base_url="http://{host}:{port}/v1", api_key="EMPTY")
# served model name -> its system prompt file
CHARACTERS = {prompts!r}

for model, prompt_file in CHARACTERS.items():
    system = (HERE / prompt_file).read_text(encoding="utf-8")
    reply = client.chat.completions.create(
        model=model,
        messages=[{{"role": "system", "content": system}},
                  {{"role": "user", "content": "Who are you, and where are you now?"}}],
        {sampling},
    )
    print(f"{{model}}: {{reply.choices[0].message.content}}")
'''


def _runs_by_character(workspace: Any, characters: Sequence[str],
                       runs: Sequence[str]) -> dict[str, str | None]:
    """Each named character's `--run` (`RUN` with one character, `CHARACTER/RUN` with
    several), or None for its latest."""
    slugs = {name: workspace.load_character(name).slug for name in characters}
    chosen: dict[str, str | None] = dict.fromkeys(characters)
    for wanted in runs:
        owner, _, _ = wanted.rpartition("/")
        if not owner and len(characters) > 1:
            raise CharforgeError(f"--run {wanted}: name the character too (CHARACTER/RUN) "
                                 "when exporting several")
        matches = [name for name in characters if not owner or slugs[name] == owner]
        if not matches:
            raise CharforgeError(f"--run {wanted}: {owner} is not among the characters "
                                 "exported")
        for name in matches:
            chosen[name] = wanted
    return chosen


# -- Ollama ------------------------------------------------------------------------------
def ollama_modelfile(agent: ServedAgent, *, template: str | None, template_note: str,
                     stops: Sequence[str]) -> str:
    """An Ollama Modelfile for `agent`: FROM the base (with ADAPTER) or the whole model,
    TEMPLATE, SYSTEM, the end-of-turn stops and the sampling defaults."""
    lines = [f"# {agent.character.name} ({agent.label}), written by charforge export ollama",
             f"# ollama create {agent.name} -f Modelfile"]
    if agent.model is not None:
        lines.append(f"FROM {_modelfile_path(agent.model)}")
    else:
        lines.append(f"FROM {_modelfile_path(agent.base_path)}")
        if agent.adapter is not None:
            lines.append(f"ADAPTER {_modelfile_path(agent.adapter)}")
    if template is not None:
        lines.append(f'TEMPLATE """{_triple_quoted(template, "TEMPLATE")}"""')
    else:
        lines.append(f"# TEMPLATE omitted: {template_note}; Ollama uses the template it "
                     "finds in the model")
    lines.append(f'SYSTEM """{_triple_quoted(agent.system_prompt, "the system prompt")}"""')
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in stops]
    lines.append(f"PARAMETER temperature {ASK_SAMPLING.temperature}")
    penalty = agent.base.entry_options.get("repetition_penalty")
    if penalty and penalty != 1.0:
        lines.append(f"PARAMETER repeat_penalty {penalty}")
    return "\n".join(lines) + "\n"


def _modelfile_path(path: Path | str) -> str:
    text = str(path)
    if any(char in text for char in '"\n\r'):
        raise CharforgeError(f"{text!r}: a path with quotes or line breaks cannot go into a "
                             "Modelfile; move the model")
    return json.dumps(text) if any(char.isspace() for char in text) else text


def _triple_quoted(text: str, what: str) -> str:
    if '"""' in text:
        raise CharforgeError(f'{what} holds """, which ends a Modelfile value; remove it')
    return text


@dataclass(frozen=True)
class OllamaExport:
    modelfile: Path
    command: str
    agent: ServedAgent
    notes: list[str]


def export_ollama(workspace: Any, character: str, *, out: Path | None = None,
                  run: str | None = None, stage: str | None = None, location: str = "",
                  status: str = "", prompted: bool = False,
                  base: str | None = None) -> OllamaExport:
    """Write `exports/<character>/ollama/Modelfile` (or into `out`); return it and the
    `ollama create` command."""
    agent = served_agent(workspace, character, "ollama", run=run, stage=stage,
                         location=location, status=status, prompted=prompted, base=base)
    tokenizer = load_tokenizer(agent.tokenizer, agent.tokenizer_options)
    template, why = ollama_template(tokenizer)
    notes = list(agent.notes)
    if template is None:
        notes.append(f"no TEMPLATE in the Modelfile: {why}; Ollama uses the model's own")
    text = ollama_modelfile(agent, template=template, template_note=why,
                            stops=stop_tokens(tokenizer, chatml=template is not None))
    folder = Path(out) if out else default_folder(workspace, [agent], "ollama")
    [path] = write_files(folder, {"Modelfile": text})
    command = shlex.join(["ollama", "create", agent.name, "-f", str(path.resolve())])
    return OllamaExport(modelfile=path, command=command, agent=agent, notes=notes)


# -- files -------------------------------------------------------------------------------
def default_folder(workspace: Any, agents: Sequence[ServedAgent], engine: Engine) -> Path:
    """`exports/<character>/<engine>/` in the workspace (`<a>+<b>` for several)."""
    return Path(workspace.root) / EXPORTS_DIR / "+".join(a.name for a in agents) / engine


def write_files(folder: Path, files: dict[str, str]) -> list[Path]:
    """Each file written whole (staged, then renamed over the old one)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = folder / name
        staging = folder / f".{name}.partial"
        staging.write_text(text, encoding="utf-8")
        staging.replace(path)
        written.append(path)
    return written
