// The chat page of `charforge serve`: pick a character, set the scene, chat with streaming.
//
// It speaks only to the server's OpenAI-compatible API, same origin, relative URLs:
//   GET  v1/characters          the characters, their models and stages
//   POST v1/chat/completions    {model, messages, stream: true, metadata} -> SSE chunks
//
// Model output is untrusted: it enters the page only as text (textContent, text nodes),
// never as HTML. The API key lives in the input field alone: never stored anywhere.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    apiKey: $("api-key"),
    character: $("character"),
    summary: $("character-summary"),
    model: $("model"),
    stageField: $("stage-field"),
    stage: $("stage"),
    location: $("location"),
    status: $("status"),
    newChat: $("new-chat"),
    downloadJson: $("download-json"),
    downloadMd: $("download-md"),
    error: $("error"),
    transcript: $("transcript"),
    emptyNote: $("empty-note"),
    composer: $("composer"),
    message: $("message"),
    send: $("send"),
    stop: $("stop"),
  };

  const state = {
    characters: [],
    // The conversation as the API sees it: {role, content} only, replies without thinking.
    messages: [],
    // One entry per reply, beside `messages`: what the transcript keeps about it.
    replies: [],
    controller: null, // the AbortController of the reply being streamed
    startedAt: new Date(),
  };

  // -- talking to the server ------------------------------------------------------------
  function requestHeaders(json) {
    const headers = {};
    if (json) headers["Content-Type"] = "application/json";
    const key = ui.apiKey.value.trim();
    if (key) headers["Authorization"] = "Bearer " + key;
    return headers;
  }

  // An error answer ({"error": {"message", ...}} or anything else) as one line for the page.
  async function describeErrorResponse(response) {
    let message = "";
    try {
      const body = await response.json();
      if (body && body.error && typeof body.error.message === "string") {
        message = body.error.message;
      } else if (body && typeof body.detail === "string") {
        message = body.detail;
      }
    } catch (_) {
      // not JSON: the status says enough
    }
    let text = "The server answered " + response.status +
      (response.statusText ? " " + response.statusText : "") + (message ? ": " + message : ".");
    if (response.status === 401) text += " Enter the server's API key in the API key field.";
    return text;
  }

  function showError(text) {
    ui.error.textContent = text;
    ui.error.hidden = false;
  }

  function clearError() {
    ui.error.textContent = "";
    ui.error.hidden = true;
  }

  // -- characters, models, stages -------------------------------------------------------
  async function loadCharacters() {
    let response;
    try {
      response = await fetch("v1/characters", { headers: requestHeaders(false) });
    } catch (err) {
      showError("Could not reach the server to list the characters: " + err.message);
      return;
    }
    if (!response.ok) {
      showError(await describeErrorResponse(response));
      return;
    }
    const body = await response.json();
    const previous = ui.character.value;
    state.characters = Array.isArray(body.data) ? body.data : [];
    ui.character.replaceChildren();
    for (const character of state.characters) {
      ui.character.append(new Option(character.name || character.id, character.id));
    }
    if (state.characters.length === 0) {
      showError("The server has no characters. Import one into the workspace first.");
      showCharacter();
      return;
    }
    clearError();
    if (state.characters.some((c) => c.id === previous)) ui.character.value = previous;
    showCharacter();
    document.body.dataset.ready = "true";
  }

  function currentCharacter() {
    return state.characters.find((c) => c.id === ui.character.value) || null;
  }

  function displayName(character) {
    if (!character) return "Character";
    return character.short_name || character.name || character.id;
  }

  // The chosen character's summary, models and stages, into the page.
  function showCharacter() {
    const character = currentCharacter();
    ui.summary.textContent = character ? character.summary || "" : "";

    ui.model.replaceChildren();
    for (const model of (character && character.models) || []) {
      let label = model.id + " (" + model.serving;
      if (model.run) label += ", " + model.run;
      ui.model.append(new Option(label + ")", model.id));
    }
    ui.model.disabled = ui.model.options.length === 0;

    ui.stage.replaceChildren(new Option("no stage", ""));
    const stages = (character && character.stages) || [];
    for (const stage of stages) ui.stage.append(new Option(stage.label, stage.label));
    ui.stageField.hidden = stages.length === 0;
  }

  // -- the transcript in the page -------------------------------------------------------
  function appendTurn(role, who) {
    ui.emptyNote.hidden = true;
    const article = document.createElement("article");
    article.className = "turn " + role;
    article.dataset.testid = role === "user" ? "user-message" : "reply";
    const name = document.createElement("div");
    name.className = "who";
    name.textContent = who;
    article.append(name);
    ui.transcript.append(article);
    return article;
  }

  function appendUserTurn(text) {
    const article = appendTurn("user", "You");
    const body = document.createElement("div");
    body.className = "content";
    body.dataset.testid = "user-content";
    body.textContent = text;
    article.append(body);
    scrollToEnd();
    return article;
  }

  // A reply's parts: its thinking (collapsible, shown once some arrives) and its content.
  function appendReplyTurn(who) {
    const article = appendTurn("assistant", who);
    article.dataset.state = "streaming";

    const thinking = document.createElement("details");
    thinking.className = "thinking";
    thinking.dataset.testid = "reply-thinking";
    thinking.hidden = true;
    const summary = document.createElement("summary");
    summary.textContent = "Thinking";
    const reasoning = document.createElement("div");
    reasoning.className = "reasoning";
    reasoning.dataset.testid = "reply-reasoning";
    thinking.append(summary, reasoning);

    const content = document.createElement("div");
    content.className = "content";
    content.dataset.testid = "reply-content";

    const note = document.createElement("div");
    note.className = "note";
    note.dataset.testid = "reply-note";

    article.append(thinking, content, note);
    return { article, thinking, reasoning, content, note };
  }

  function scrollToEnd() {
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }

  function setStreaming(streaming) {
    ui.send.disabled = streaming;
    ui.stop.disabled = !streaming;
    ui.newChat.disabled = streaming;
    ui.character.disabled = streaming;
    document.body.dataset.streaming = streaming ? "true" : "false";
  }

  // -- one turn -------------------------------------------------------------------------
  function sceneMetadata() {
    const metadata = {};
    const location = ui.location.value.trim();
    const status = ui.status.value.trim();
    const stage = ui.stageField.hidden ? "" : ui.stage.value;
    if (location) metadata.location = location;
    if (status) metadata.status = status;
    if (stage) metadata.stage = stage;
    return metadata;
  }

  async function sendMessage() {
    const text = ui.message.value.trim();
    if (!text || state.controller) return;
    // The list may not have loaded yet (say, before the API key was typed): once more now.
    if (!currentCharacter()) await loadCharacters();
    const character = currentCharacter();
    const model = ui.model.value;
    if (!character || !model) {
      showError("Pick a character and a model first.");
      return;
    }
    clearError();

    const metadata = sceneMetadata();
    state.messages.push({ role: "user", content: text });
    const userTurn = appendUserTurn(text);
    ui.message.value = "";
    const reply = appendReplyTurn(displayName(character));
    scrollToEnd();

    const body = { model, messages: state.messages.slice(), stream: true };
    if (Object.keys(metadata).length > 0) body.metadata = metadata;

    const controller = new AbortController();
    state.controller = controller;
    setStreaming(true);
    const result = { content: "", reasoning: "", finishReason: null };
    let failure = null;
    let stopped = false;
    try {
      const response = await fetch("v1/chat/completions", {
        method: "POST",
        headers: requestHeaders(true),
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.ok) {
        failure = await describeErrorResponse(response);
      } else {
        failure = await readStream(response, reply, result);
      }
    } catch (err) {
      if (err && err.name === "AbortError") {
        stopped = true;
      } else {
        failure = "The reply broke off: " + (err && err.message ? err.message : String(err));
      }
    } finally {
      state.controller = null;
      setStreaming(false);
    }

    if (failure) showError(failure);
    if (result.content === "" && result.reasoning === "" && (failure || stopped)) {
      // Nothing came back: this turn did not happen. The message returns to the input.
      state.messages.pop();
      userTurn.remove();
      reply.article.remove();
      if (!ui.message.value) ui.message.value = text;
      if (stopped) showError("Stopped before the reply began.");
      ui.emptyNote.hidden = ui.transcript.querySelector(".turn") !== null;
      return;
    }

    state.messages.push({ role: "assistant", content: result.content });
    state.replies.push({
      message_index: state.messages.length - 1,
      character: character.id,
      model,
      scene: { location: metadata.location || "", status: metadata.status || "" },
      stage: metadata.stage || null,
      reasoning_content: result.reasoning,
      finish_reason: stopped ? "stopped" : failure ? "error" : result.finishReason,
    });
    reply.article.dataset.state = stopped ? "stopped" : failure ? "error" : "done";
    if (stopped) reply.note.textContent = "(stopped)";
    else if (failure) reply.note.textContent = "(broken off)";
    else if (result.finishReason === "length") reply.note.textContent = "(cut at the length limit)";
  }

  // Reads an OpenAI SSE body into `reply`, line by line, whatever the read boundaries.
  // Returns an error text when the stream carried an error, else null.
  async function readStream(response, reply, result) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let done = false;
    while (!done) {
      const chunk = await reader.read();
      if (chunk.done) {
        buffer += decoder.decode();
      } else {
        buffer += decoder.decode(chunk.value, { stream: true });
      }
      const lines = buffer.split(/\r\n|\r|\n/);
      // The last piece may be a line cut in two: keep it for the next read.
      buffer = chunk.done ? "" : lines.pop();
      for (const line of lines) {
        const outcome = handleLine(line, reply, result);
        if (outcome === "done") {
          done = true;
          break;
        }
        if (typeof outcome === "string") {
          await reader.cancel().catch(() => {});
          return outcome;
        }
      }
      if (chunk.done) break;
    }
    if (done) await reader.cancel().catch(() => {});
    return null;
  }

  // One SSE line: "done" at [DONE], an error text for an error event, else nothing.
  function handleLine(line, reply, result) {
    if (!line.startsWith("data:")) return null; // blank separators, comments, event names
    const payload = line.slice(5).trim();
    if (payload === "") return null;
    if (payload === "[DONE]") return "done";
    let event;
    try {
      event = JSON.parse(payload);
    } catch (_) {
      return "The server sent a chunk that is not JSON.";
    }
    if (event.error) {
      return "The server stopped the reply: " + (event.error.message || "unknown error");
    }
    const choice = event.choices && event.choices[0];
    if (!choice) return null;
    const delta = choice.delta || {};
    if (typeof delta.reasoning_content === "string" && delta.reasoning_content) {
      result.reasoning += delta.reasoning_content;
      reply.reasoning.append(document.createTextNode(delta.reasoning_content));
      reply.thinking.hidden = false;
    }
    if (typeof delta.content === "string" && delta.content) {
      result.content += delta.content;
      reply.content.append(document.createTextNode(delta.content));
    }
    if (choice.finish_reason) result.finishReason = choice.finish_reason;
    scrollToEnd();
    return null;
  }

  function stopReply() {
    if (state.controller) state.controller.abort();
  }

  function newConversation() {
    stopReply();
    state.messages = [];
    state.replies = [];
    state.startedAt = new Date();
    for (const turn of ui.transcript.querySelectorAll(".turn")) turn.remove();
    ui.emptyNote.hidden = false;
    clearError();
    ui.message.focus();
  }

  // -- downloads ------------------------------------------------------------------------
  function transcriptObject() {
    const character = currentCharacter();
    const metadata = sceneMetadata();
    return {
      format: "charforge-chat-transcript",
      version: 1,
      started_at: state.startedAt.toISOString(),
      saved_at: new Date().toISOString(),
      character: character
        ? { id: character.id, name: character.name, short_name: character.short_name }
        : null,
      model: ui.model.value || null,
      scene: { location: metadata.location || "", status: metadata.status || "" },
      stage: metadata.stage || null,
      messages: state.messages.map((m) => ({ role: m.role, content: m.content })),
      replies: state.replies.map((r) => ({ ...r, scene: { ...r.scene } })),
    };
  }

  // Markdown viewers may render raw HTML: every "<" of the conversation is escaped, so a
  // reply's tags stay text there too (a backslash-escaped "<" reads as "<").
  function markdownText(text) {
    return text.replace(/</g, "\\<");
  }

  function transcriptMarkdown() {
    const t = transcriptObject();
    const character = currentCharacter();
    const who = markdownText(displayName(character));
    const name = t.character ? t.character.name || t.character.id : "a character";
    const lines = ["# Conversation with " + markdownText(name), ""];
    lines.push("- Model: " + markdownText(t.model || "none"));
    if (t.stage) lines.push("- Stage: " + markdownText(t.stage));
    if (t.scene.location) lines.push("- Location: " + markdownText(t.scene.location));
    if (t.scene.status) lines.push("- Status: " + markdownText(t.scene.status));
    lines.push("- Started: " + t.started_at, "");
    const replyAt = new Map(t.replies.map((r) => [r.message_index, r]));
    t.messages.forEach((message, index) => {
      if (message.role === "user") {
        lines.push("**You:**", "", markdownText(message.content), "");
        return;
      }
      lines.push("**" + who + ":**", "");
      const reply = replyAt.get(index);
      if (reply && reply.reasoning_content) {
        lines.push("> *Thinking:*");
        for (const line of markdownText(reply.reasoning_content).split("\n")) {
          lines.push("> " + line);
        }
        lines.push("");
      }
      lines.push(markdownText(message.content), "");
      if (reply && reply.finish_reason === "stopped") lines.push("*(stopped)*", "");
    });
    return lines.join("\n");
  }

  function download(filename, type, text) {
    const url = URL.createObjectURL(new Blob([text], { type }));
    const link = document.createElement("a");
    link.href = url;
    link.download = filename;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function transcriptFilename(extension) {
    const id = (ui.character.value || "chat").replace(/[^A-Za-z0-9_-]+/g, "-");
    const stamp = state.startedAt.toISOString().replace(/[:.]/g, "-");
    return "charforge-" + id + "-" + stamp + "." + extension;
  }

  // -- wiring ---------------------------------------------------------------------------
  ui.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    sendMessage();
  });
  ui.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      sendMessage();
    }
  });
  ui.stop.addEventListener("click", stopReply);
  ui.newChat.addEventListener("click", newConversation);
  ui.character.addEventListener("change", () => {
    // Another character is another conversation.
    showCharacter();
    if (state.messages.length > 0) newConversation();
  });
  ui.apiKey.addEventListener("change", loadCharacters);
  ui.downloadJson.addEventListener("click", () => {
    const text = JSON.stringify(transcriptObject(), null, 2) + "\n";
    download(transcriptFilename("json"), "application/json", text);
  });
  ui.downloadMd.addEventListener("click", () => {
    download(transcriptFilename("md"), "text/markdown", transcriptMarkdown());
  });

  setStreaming(false);
  loadCharacters();
})();
