// The demo page of `grove serve`: pick a model, give it an image, a sound, a text or a prompt,
// and see what it answers, and why. Plain ES2020, no dependencies; every call goes through the
// public API (/v1/models, /v1/models/{name}/predict, /generate and /explain).
"use strict";

(() => {
  const KEY_STORE = "grove-api-key";
  const TOP_K = 5;
  const MAX_RECORD_SECONDS = 60; // 16-bit PCM at 48 kHz: ~5.8 MB, under the default 10 MB upload limit
  // Content types the server takes as a raw body; anything else goes as application/octet-stream
  // and the server decides from the bytes.
  const RAW_TYPES = {
    image: ["image/png", "image/jpeg", "image/bmp", "image/gif", "image/webp", "image/tiff"],
    audio: ["audio/wav", "audio/x-wav", "audio/wave", "audio/flac", "audio/ogg"],
  };
  const ACCEPT = {
    image: "image/*",
    audio: ".wav,.flac,.ogg,.oga,audio/wav,audio/x-wav,audio/wave,audio/flac,audio/ogg",
  };
  // Copies the microphone's samples (already mixed down to mono by the node) to the page.
  const WORKLET = `
    class GroveCapture extends AudioWorkletProcessor {
      process(inputs) {
        const channel = inputs[0] && inputs[0][0];
        if (channel && channel.length) this.port.postMessage(channel.slice(0));
        return true;
      }
    }
    registerProcessor("grove-capture", GroveCapture);
  `;

  const $ = (id) => document.getElementById(id);
  const el = {
    keyForm: $("key-form"), keyMessage: $("key-message"), apiKey: $("api-key"), keyForget: $("key-forget"),
    picker: $("picker"), model: $("model"), modelInfo: $("model-info"),
    form: $("form"), filePanel: $("file-panel"), drop: $("drop"), dropText: $("drop-text"), file: $("file"),
    audioTools: $("audio-tools"), record: $("record"), recordStatus: $("record-status"),
    preview: $("preview"), player: $("player"), fileName: $("file-name"),
    textPanel: $("text-panel"), text: $("text"),
    lmPanel: $("lm-panel"), prompt: $("prompt"), maxNewTokens: $("max-new-tokens"), temperature: $("temperature"),
    run: $("run"), stop: $("stop"), status: $("status"), error: $("error"),
    explainTools: $("explain-tools"), explain: $("explain"), explainMethod: $("explain-method"),
    output: $("output"), results: $("results"), transcriptBox: $("transcript-box"), transcript: $("transcript"),
    explanationBox: $("explanation-box"), explanationTitle: $("explanation-title"),
    explanationImage: $("explanation-image"), explanationTokens: $("explanation-tokens"),
    explanationDeletion: $("explanation-deletion"),
    generationBox: $("generation-box"), generationPrompt: $("generation-prompt"), generation: $("generation"),
  };

  let models = [];
  let current = null; // the chosen model's info, from GET /v1/models
  let pending = null; // {blob, type, name}: the image or audio that Run sends
  let pendingUrl = null;
  let busy = false;
  let controller = null; // aborts the request under way (Stop)
  let recorder = null;

  class ApiError extends Error {
    constructor(message, status = 0) {
      super(message);
      this.name = "ApiError";
      this.status = status;
    }
  }

  // -- the API key (only when the server asks for one) ------------------------------------------
  function storedKey() {
    try {
      return sessionStorage.getItem(KEY_STORE) || "";
    } catch {
      return "";
    }
  }

  function storeKey(key) {
    try {
      if (key) sessionStorage.setItem(KEY_STORE, key);
      else sessionStorage.removeItem(KEY_STORE);
    } catch {
      // storage refused (private mode): the key lasts as long as this page
    }
    memoryKey = key;
  }

  let memoryKey = storedKey();

  // sent: whether the refused request carried a key (then that key is wrong, and forgotten)
  function askForKey(sent) {
    if (sent) storeKey("");
    el.keyMessage.textContent = sent
      ? "The server refused that API key: check it and enter it again."
      : "This server needs its API key.";
    el.keyForm.hidden = false;
    el.keyForget.hidden = true;
    el.apiKey.focus();
  }

  el.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = el.apiKey.value.trim();
    if (!key) return;
    storeKey(key);
    el.apiKey.value = "";
    el.keyForm.hidden = true;
    clearError();
    if (!models.length) loadModels();
    else el.keyForget.hidden = false;
  });

  el.keyForget.addEventListener("click", () => {
    storeKey("");
    location.reload();
  });

  // -- calling the API -----------------------------------------------------------------------------
  async function api(path, options = {}) {
    const headers = { ...(options.headers || {}) };
    if (memoryKey) headers.Authorization = `Bearer ${memoryKey}`;
    let response;
    try {
      response = await fetch(path, { ...options, headers });
    } catch (err) {
      if (err.name === "AbortError") throw err;
      throw new ApiError(`cannot reach the server (${err.message}): is grove serve still running?`);
    }
    if (!response.ok) {
      let message = `the server answered ${response.status} ${response.statusText}`.trim();
      try {
        const body = await response.json();
        if (body && typeof body.error === "string") message = body.error;
      } catch {
        // not JSON (a proxy's page?): keep the status line
      }
      if (response.status === 401) askForKey(Boolean(headers.Authorization));
      throw new ApiError(message, response.status);
    }
    return response;
  }

  const modelPath = (suffix) => `/v1/models/${encodeURIComponent(current.name)}/${suffix}`;

  // -- models ----------------------------------------------------------------------------------
  const TASKS = {
    "image/classification": "image classification",
    "audio/classification": "audio classification",
    "audio/ctc": "speech to text (CTC)",
    "text/classification": "text classification",
    "text/lm": "text generation",
  };

  function describeTask(m) {
    return TASKS[`${m.modality}/${m.task}`] || `${m.task}, ${m.modality}`;
  }

  async function loadModels() {
    let body;
    try {
      body = await (await api("/v1/models")).json();
    } catch (err) {
      if (err.status !== 401) showError(`cannot list the models: ${err.message}`);
      return;
    }
    models = Array.isArray(body.models) ? body.models : [];
    el.keyForm.hidden = true;
    el.keyForget.hidden = !memoryKey;
    if (!models.length) {
      showError("this server serves no models");
      return;
    }
    el.model.replaceChildren(...models.map((m) => {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = `${m.name} — ${describeTask(m)}`;
      return option;
    }));
    let wanted = "";
    try {
      wanted = decodeURIComponent(location.hash.slice(1));
    } catch {
      // a mangled #fragment: start with the first model
    }
    const first = models.some((m) => m.name === wanted) ? wanted : models[0].name;
    el.model.value = first;
    el.picker.hidden = false;
    el.form.hidden = false;
    selectModel(first);
  }

  function listClasses(classes) {
    const shown = classes.slice(0, 12).join(", ");
    return classes.length > 12 ? `${shown}, …` : shown;
  }

  function describeInput(m) {
    const input = m.input || {};
    const from = m.source === "export" ? "an ONNX export" : "a training run";
    const n = (m.classes || []).length;
    const classes = n ? ` ${n} classes: ${listClasses(m.classes)}.` : "";
    let takes;
    if (input.kind === "image") {
      const color = input.channels === 1 ? "grayscale" : "color";
      takes = `Takes an image (seen as ${color}, ${input.size}×${input.size} pixels).${classes}`;
    } else if (input.kind === "audio") {
      const heard = [
        input.sample_rate ? `heard at ${input.sample_rate / 1000} kHz` : "",
        input.clip_seconds ? `clips of ${input.clip_seconds} s` : "any length",
      ].filter(Boolean).join(", ");
      takes = m.task === "ctc"
        ? `Transcribes speech from WAV, FLAC or OGG audio (${heard}).`
        : `Takes WAV, FLAC or OGG audio (${heard}).${classes}`;
    } else if (input.kind === "prompt") {
      const context = input.context_tokens ? `it sees the last ${input.context_tokens} tokens` : "it reads it all";
      takes = `Continues a prompt (${context}).`;
    } else {
      const max = input.max_tokens ? ` (up to ${input.max_tokens} tokens)` : "";
      takes = `Takes a text${max}.${classes}`;
    }
    return `${takes} Served from ${from}.`;
  }

  function selectModel(name) {
    cleanUpRecorder(); // a recording under way belongs to the model it was made for
    current = models.find((m) => m.name === name) || null;
    clearPending();
    clearError();
    clearOutput();
    setStatus("idle", "");
    if (!current) return;
    try {
      history.replaceState(null, "", `#${encodeURIComponent(name)}`);
    } catch {
      // some embedded views forbid it; the hash only preselects the model on reload
    }
    el.modelInfo.textContent = describeInput(current);
    const { modality, task } = current;
    const file = modality === "image" || modality === "audio";
    el.filePanel.hidden = !file;
    el.audioTools.hidden = modality !== "audio";
    el.textPanel.hidden = !(modality === "text" && task !== "lm");
    el.lmPanel.hidden = task !== "lm";
    if (file) {
      el.file.accept = ACCEPT[modality];
      el.dropText.textContent = modality === "image"
        ? "Drop an image here, or choose one"
        : "Drop a WAV, FLAC or OGG file here, choose one, or record";
    }
    el.run.textContent = task === "lm" ? "Generate" : task === "ctc" ? "Transcribe" : "Classify";
    el.explainTools.hidden = !current.explain;
    el.explainMethod.replaceChildren(...(current.explain_methods || []).map((method) => {
      const option = document.createElement("option");
      option.value = method;
      option.textContent = method;
      return option;
    }));
    updateRun();
  }

  el.model.addEventListener("change", () => selectModel(el.model.value));

  // -- inputs ----------------------------------------------------------------------------------
  function ready() {
    if (!current || busy || recorder) return false;
    if (current.task === "lm") return el.prompt.value.length > 0;
    if (current.modality === "text") return el.text.value.trim().length > 0;
    return pending !== null;
  }

  function updateRun() {
    el.run.disabled = !ready();
    el.explain.disabled = !ready();
  }

  for (const area of [el.text, el.prompt]) {
    area.addEventListener("input", updateRun);
    area.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        if (ready()) run(answer);
      }
    });
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KB`;
    return `${(n / (1 << 20)).toFixed(1)} MB`;
  }

  function clearPending(keepInput = false) {
    pending = null;
    if (pendingUrl) URL.revokeObjectURL(pendingUrl);
    pendingUrl = null;
    if (!keepInput) el.file.value = "";
    el.preview.hidden = true;
    el.preview.removeAttribute("src");
    el.player.hidden = true;
    el.player.removeAttribute("src");
    el.player.removeAttribute("data-seconds");
    el.fileName.textContent = "";
  }

  // fromInput: the file input holds this blob (else it is a recording, and the input is emptied)
  function setPending(blob, type, name, note = "", fromInput = false) {
    clearPending(fromInput);
    pending = { blob, type, name };
    pendingUrl = URL.createObjectURL(blob);
    if (current.modality === "image") {
      el.preview.src = pendingUrl;
      el.preview.hidden = false;
    } else {
      el.player.src = pendingUrl;
      el.player.hidden = false;
    }
    el.fileName.textContent = `${name} · ${formatBytes(blob.size)}${note}`;
    clearError();
    clearOutput();
    setStatus("idle", "");
    updateRun();
  }

  function useFile(file) {
    if (!current || current.task === "lm" || current.modality === "text") return;
    const type = RAW_TYPES[current.modality].includes(file.type) ? file.type : "application/octet-stream";
    setPending(file, type, file.name || "file", "", true);
  }

  el.preview.addEventListener("error", () => {
    if (pending) el.preview.hidden = true; // the browser cannot show it; the server may still read it
  });

  el.file.addEventListener("change", () => {
    const file = el.file.files && el.file.files[0];
    if (file) useFile(file);
  });

  // Dropping a file anywhere on the page must not navigate away from it.
  for (const type of ["dragover", "drop"]) {
    document.addEventListener(type, (event) => event.preventDefault());
  }
  el.drop.addEventListener("dragenter", () => el.drop.classList.add("over"));
  el.drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    el.drop.classList.add("over");
  });
  el.drop.addEventListener("dragleave", (event) => {
    if (!el.drop.contains(event.relatedTarget)) el.drop.classList.remove("over");
  });
  el.drop.addEventListener("drop", (event) => {
    event.preventDefault();
    el.drop.classList.remove("over");
    const files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) return;
    try {
      el.file.files = files;
    } catch {
      // read-only in old browsers
    }
    useFile(files[0]);
  });

  // -- recording from the microphone: PCM through Web Audio, encoded as a 16-bit mono WAV -------
  el.record.addEventListener("click", () => {
    if (recorder) stopRecording();
    else startRecording().catch((err) => {
      cleanUpRecorder();
      showError(`cannot record: ${err.message || err.name}`);
    });
  });

  async function startRecording() {
    clearError();
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error("the browser only lends the microphone to secure pages: open the demo over https or on "
        + "localhost, or choose a file");
    }
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) throw new Error("this browser has no Web Audio API; choose a file");
    el.record.disabled = true;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
    } finally {
      el.record.disabled = false;
    }
    const context = new Context();
    const r = { stream, context, chunks: [], node: null, source: null, timer: 0, started: 0 };
    recorder = r;
    updateRun();
    if (context.state === "suspended") await context.resume();
    if (recorder !== r) return; // stopped while starting
    r.source = context.createMediaStreamSource(stream);
    const mute = context.createGain(); // keeps the capture node pulled without playing the microphone back
    mute.gain.value = 0;
    mute.connect(context.destination);
    if (context.audioWorklet && window.AudioWorkletNode) {
      const url = URL.createObjectURL(new Blob([WORKLET], { type: "text/javascript" }));
      try {
        await context.audioWorklet.addModule(url);
      } finally {
        URL.revokeObjectURL(url);
      }
      if (recorder !== r) return;
      r.node = new AudioWorkletNode(context, "grove-capture", {
        numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
        channelCount: 1, channelCountMode: "explicit", channelInterpretation: "speakers",
      });
      r.node.port.onmessage = (event) => r.chunks.push(event.data);
    } else {
      r.node = context.createScriptProcessor(4096, 1, 1); // mixes the input down to 1 channel
      r.node.onaudioprocess = (event) => r.chunks.push(new Float32Array(event.inputBuffer.getChannelData(0)));
    }
    if (recorder !== r) return; // stopped while starting
    r.source.connect(r.node);
    r.node.connect(mute);
    r.started = performance.now();
    el.record.textContent = "■ Stop";
    el.record.setAttribute("aria-pressed", "true");
    el.recordStatus.textContent = "recording… 0.0 s";
    r.timer = setInterval(() => {
      const seconds = (performance.now() - r.started) / 1000;
      el.recordStatus.textContent = `recording… ${seconds.toFixed(1)} s`;
      if (seconds >= MAX_RECORD_SECONDS) stopRecording();
    }, 100);
  }

  function cleanUpRecorder() {
    const r = recorder;
    recorder = null;
    el.record.textContent = "● Record";
    el.record.setAttribute("aria-pressed", "false");
    el.recordStatus.textContent = "";
    updateRun();
    if (!r) return null;
    clearInterval(r.timer);
    if (r.node && r.node.port) r.node.port.onmessage = null;
    if (r.node) r.node.onaudioprocess = null;
    try {
      if (r.source) r.source.disconnect();
      if (r.node) r.node.disconnect();
    } catch {
      // already disconnected
    }
    r.stream.getTracks().forEach((track) => track.stop());
    const rate = r.context.sampleRate;
    r.context.close().catch(() => {});
    return { chunks: r.chunks, rate };
  }

  function stopRecording() {
    const taken = cleanUpRecorder();
    if (!taken || !current || current.modality !== "audio") return;
    const samples = concat(taken.chunks);
    if (!samples.length) {
      showError("nothing was recorded: is a microphone connected and allowed?");
      return;
    }
    const seconds = samples.length / taken.rate;
    const wav = encodeWav(samples, taken.rate);
    setPending(wav, "audio/wav", "recording.wav", ` · ${seconds.toFixed(1)} s at ${taken.rate / 1000} kHz`);
    el.player.dataset.seconds = seconds.toFixed(3);
  }

  function concat(chunks) {
    const out = new Float32Array(chunks.reduce((n, c) => n + c.length, 0));
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }

  function encodeWav(samples, rate) {
    const buffer = new ArrayBuffer(44 + samples.length * 2);
    const view = new DataView(buffer);
    const ascii = (at, text) => {
      for (let i = 0; i < text.length; i++) view.setUint8(at + i, text.charCodeAt(i));
    };
    ascii(0, "RIFF");
    view.setUint32(4, 36 + samples.length * 2, true);
    ascii(8, "WAVE");
    ascii(12, "fmt ");
    view.setUint32(16, 16, true); // size of the fmt chunk
    view.setUint16(20, 1, true); // PCM
    view.setUint16(22, 1, true); // mono
    view.setUint32(24, rate, true);
    view.setUint32(28, rate * 2, true); // bytes per second
    view.setUint16(32, 2, true); // bytes per frame
    view.setUint16(34, 16, true); // bits per sample
    ascii(36, "data");
    view.setUint32(40, samples.length * 2, true);
    for (let i = 0; i < samples.length; i++) {
      const s = Math.max(-1, Math.min(1, samples[i] || 0));
      view.setInt16(44 + i * 2, Math.round(s < 0 ? s * 0x8000 : s * 0x7fff), true);
    }
    return new Blob([buffer], { type: "audio/wav" });
  }

  // -- running ---------------------------------------------------------------------------------
  function setStatus(state, text) {
    el.status.dataset.state = state;
    el.status.textContent = text;
  }

  function setBusy(on) {
    busy = on;
    el.model.disabled = on;
    el.record.disabled = on;
    el.explainMethod.disabled = on;
    el.stop.hidden = !on;
    el.output.setAttribute("aria-busy", String(on));
    updateRun();
  }

  function showError(message) {
    el.error.textContent = message;
    el.error.hidden = false;
  }

  function clearError() {
    el.error.hidden = true;
    el.error.textContent = "";
  }

  function clearOutput() {
    el.output.hidden = true;
    el.results.hidden = true;
    el.results.replaceChildren();
    el.transcriptBox.hidden = true;
    el.transcript.textContent = "";
    el.generationBox.hidden = true;
    el.generationPrompt.textContent = "";
    el.generation.replaceChildren();
    el.generation.dataset.pieces = "0";
    el.generation.removeAttribute("data-state");
    el.explanationBox.hidden = true;
    el.explanationTitle.textContent = "";
    el.explanationImage.hidden = true;
    el.explanationImage.removeAttribute("src");
    el.explanationTokens.hidden = true;
    el.explanationTokens.replaceChildren();
    el.explanationDeletion.textContent = "";
  }

  el.form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (ready()) run(answer);
  });

  el.explain.addEventListener("click", () => {
    if (ready()) run(explain);
  });

  el.stop.addEventListener("click", () => {
    if (controller) controller.abort();
  });

  // What Run does: generate for a language model, predict for the others.
  const answer = (signal) => (current.task === "lm" ? generate(signal) : predict(signal));

  // action(signal) makes the request and shows its answer; it returns a note for the status line.
  async function run(action) {
    clearError();
    clearOutput();
    setBusy(true);
    setStatus("working", "working…");
    controller = new AbortController();
    const started = performance.now();
    try {
      const note = await action(controller.signal);
      const seconds = ((performance.now() - started) / 1000).toFixed(2);
      setStatus("done", `done in ${seconds} s${note || ""}`);
    } catch (err) {
      if (err.name === "AbortError") {
        setStatus("stopped", "stopped");
        if (el.generation.dataset.state === "streaming") el.generation.dataset.state = "stopped";
      } else {
        setStatus("error", "");
        if (el.generation.dataset.state === "streaming") el.generation.dataset.state = "error";
        showError(err.message || String(err));
      }
    } finally {
      controller = null;
      setBusy(false);
    }
  }

  // The first result of one of the model's operations for what the page holds: the text as JSON
  // (options as keys), or the chosen file as the raw body (options in the query).
  async function firstResult(operation, text, options, signal, what) {
    let response;
    if (current.modality === "text") {
      response = await api(modelPath(operation), {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ inputs: [text], ...options }),
        signal,
      });
    } else {
      const query = new URLSearchParams(options).toString();
      response = await api(`${modelPath(operation)}${query ? `?${query}` : ""}`, {
        method: "POST",
        headers: { "Content-Type": pending.type },
        body: pending.blob,
        signal,
      });
    }
    const body = await response.json();
    const result = body && Array.isArray(body.results) ? body.results[0] : null;
    if (!result) throw new ApiError(`the server answered without ${what}`);
    return result;
  }

  async function predict(signal) {
    // transcription models take a beam width, classifiers how many labels to return
    const options = current.task === "ctc" ? {} : { top_k: TOP_K };
    const result = await firstResult("predict", el.text.value, options, signal, "a result");
    if (current.task === "ctc") showTranscript(typeof result.transcript === "string" ? result.transcript : "");
    else showBars(Array.isArray(result.top) ? result.top : []);
    return "";
  }

  function showBars(top) {
    const rows = top.map(({ label, probability }) => {
      const p = Number(probability) || 0;
      const percent = Math.max(0, Math.min(100, p * 100));
      const row = document.createElement("li");
      row.className = "bar";
      row.dataset.label = label;
      row.dataset.probability = String(p);
      const name = document.createElement("span");
      name.className = "label";
      name.textContent = label;
      name.title = label;
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = `${percent}%`;
      track.append(fill);
      const pct = document.createElement("span");
      pct.className = "pct";
      pct.textContent = `${percent.toFixed(1)}%`;
      row.append(name, track, pct);
      return row;
    });
    el.results.replaceChildren(...rows);
    el.results.hidden = false;
    el.output.hidden = false;
  }

  function showTranscript(text) {
    el.transcript.textContent = text;
    el.transcript.classList.toggle("empty", text.trim() === "");
    el.transcriptBox.hidden = false;
    el.output.hidden = false;
  }

  // -- explanations: what made the model answer as it did -----------------------------------------
  async function explain(signal) {
    const text = current.task === "lm" ? el.prompt.value : el.text.value;
    const method = el.explainMethod.value || "auto";
    showExplanation(await firstResult("explain", text, { method }, signal, "an explanation"));
    return "";
  }

  function showExplanation(result) {
    const probability = Number(result.probability) || 0;
    const target = String(result.target);
    el.explanationTitle.textContent = current.task === "lm"
      ? `${result.method}: the next token ${JSON.stringify(target)} (${probability.toFixed(3)})`
      : current.task === "ctc"
        ? `${result.method}: the transcript ${JSON.stringify(target)}`
        : `${result.method}: ${target} (${probability.toFixed(3)})`;
    if (typeof result.image === "string" && result.image.startsWith("data:image/png;base64,")) {
      el.explanationImage.src = result.image;
      el.explanationImage.hidden = false;
    }
    if (Array.isArray(result.tokens)) {
      showTokens(result.tokens);
    }
    el.explanationDeletion.textContent = deletionLine(result.deletion || {});
    el.explanationBox.hidden = false;
    el.output.hidden = false;
  }

  // Tokens coloured as grove's HTML explanations are: white at 0, green where a token raised the
  // explained probability, red where it lowered it, scaled by the strongest.
  function showTokens(tokens) {
    const scale = Math.max(0, ...tokens.map((t) => Math.abs(Number(t.attribution) || 0))) || 1;
    const nodes = [];
    tokens.forEach((t, i) => {
      const a = Number(t.attribution) || 0;
      const span = document.createElement("span");
      span.className = "token";
      span.textContent = String(t.token);
      span.title = `${a >= 0 ? "+" : ""}${a.toFixed(4)}`;
      span.dataset.attribution = String(a);
      span.style.background = tokenColor(a / scale);
      if (i) nodes.push(document.createTextNode(" "));
      nodes.push(span);
    });
    el.explanationTokens.replaceChildren(...nodes);
    el.explanationTokens.hidden = false;
  }

  function tokenColor(a) {
    const clipped = Math.max(-1, Math.min(1, a));
    const fade = Math.round(255 * (1 - Math.abs(clipped) * 0.75));
    return clipped >= 0 ? `rgb(${fade}, 255, ${fade})` : `rgb(255, ${fade}, ${fade})`;
  }

  function deletionLine({ auc, random_auc: random }) {
    if (typeof auc !== "number" || typeof random !== "number") return "deletion: nothing to remove";
    return `deletion area ${auc.toFixed(3)} (random order ${random.toFixed(3)}; lower is more faithful)`;
  }

  async function generate(signal) {
    const prompt = el.prompt.value;
    const maxNewTokens = Number(el.maxNewTokens.value);
    const temperature = Number(el.temperature.value);
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) {
      throw new ApiError("max new tokens must be a whole number, at least 1");
    }
    if (el.temperature.value.trim() === "" || !Number.isFinite(temperature) || temperature < 0) {
      throw new ApiError("temperature must be a number, at least 0 (0 always picks the most probable token)");
    }
    const text = document.createTextNode("");
    el.generationPrompt.textContent = prompt;
    el.generation.replaceChildren(text);
    el.generation.dataset.state = "streaming";
    el.generation.dataset.pieces = "0";
    el.generationBox.hidden = false;
    el.output.hidden = false;

    const response = await api(modelPath("generate"), {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify({ prompt, max_new_tokens: maxNewTokens, temperature, stream: true }),
      signal,
    });
    if (!(response.headers.get("content-type") || "").startsWith("text/event-stream") || !response.body) {
      const body = await response.json(); // a server that does not stream: the whole text at once
      text.data = typeof body.text === "string" ? body.text : "";
      el.generation.dataset.state = "done";
      return "";
    }

    let pieces = 0;
    let finished = false;
    const onEvent = (type, data) => {
      let payload;
      try {
        payload = JSON.parse(data);
      } catch {
        throw new ApiError(`the server sent an unreadable event: ${data.slice(0, 200)}`);
      }
      if (type === "error") throw new ApiError(payload.error || "generation failed");
      if (type === "done") {
        if (typeof payload.text === "string" && payload.text !== text.data) text.data = payload.text;
        finished = true;
      } else if (type === "message" && typeof payload.text === "string") {
        text.appendData(payload.text);
        pieces += 1;
        el.generation.dataset.pieces = String(pieces);
      }
    };
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        buffer += decoder.decode(value || new Uint8Array(0), { stream: !done });
        buffer = parseEvents(buffer, onEvent, done);
        if (done || finished) break;
      }
    } finally {
      reader.cancel().catch(() => {});
    }
    if (!finished) throw new ApiError("the stream ended before the model finished: the text above may be cut short");
    el.generation.dataset.state = "done";
    return ` · ${pieces} piece${pieces === 1 ? "" : "s"}`;
  }

  // Server-sent events: blocks separated by a blank line, of "event: NAME" and "data: ..." lines.
  // Calls onEvent(type, data) per complete block and returns what is left of the buffer.
  function parseEvents(buffer, onEvent, flush) {
    const blocks = buffer.split(/\r\n\r\n|\r\r|\n\n/);
    const rest = flush ? "" : blocks.pop();
    for (const block of blocks) {
      let type = "message";
      const data = [];
      for (const line of block.split(/\r\n|\r|\n/)) {
        if (!line || line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") type = value;
        else if (field === "data") data.push(value);
      }
      if (data.length) onEvent(type, data.join("\n"));
    }
    return rest;
  }

  loadModels();
})();
