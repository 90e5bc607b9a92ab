// The page at `GET /`: draw a digit or drop an image, post it to /predict, show the classes.
// Plain JavaScript, no build step, no third-party code. It is a client of the server like any
// other: the same /predict, the same preprocessing, limits and rate limits.
//
// For tests: <body data-drawn="N"> counts changes to the drawing, and data-shown="N" is the
// drawing whose prediction is on screen (equal once the page has caught up), or "file".
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const pad = $("pad");
  const ctx = pad.getContext("2d");
  const INK = "#fff";
  const PAPER = "#000";
  const LINE_WIDTH = 20; // canvas pixels of 280: about the stroke of an MNIST digit once fitted
  const THROTTLE_MS = 300; // while drawing, at most one request this often
  const TOP = 5; // classes shown as bars

  let drawn = 0; // changes to the drawing so far
  let hasInk = false;
  let stroke = null; // {id, x, y} while a pointer draws
  let timer = null; // the pending throttled send
  let inFlight = false;
  let again = false; // the drawing changed while a request was in flight
  let lastSent = 0;
  let holdUntil = 0; // after a 429 or 503 with Retry-After: no drawing is sent before this
  let classNames = null;
  let posted = 0; // requests sent so far
  let newest = 0; // the newest request whose answer is on screen (older answers are dropped)

  // ---- drawing -------------------------------------------------------------------------

  function clearPad() {
    ctx.fillStyle = PAPER;
    ctx.fillRect(0, 0, pad.width, pad.height);
    hasInk = false;
    drawn += 1;
    document.body.dataset.drawn = String(drawn);
  }

  function point(event) {
    const rect = pad.getBoundingClientRect();
    return {
      x: ((event.clientX - rect.left) * pad.width) / rect.width,
      y: ((event.clientY - rect.top) * pad.height) / rect.height,
    };
  }

  function segment(from, to) {
    ctx.strokeStyle = INK;
    ctx.lineWidth = LINE_WIDTH;
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(from.x, from.y);
    ctx.lineTo(to.x, to.y);
    ctx.stroke();
    hasInk = true;
    drawn += 1;
    document.body.dataset.drawn = String(drawn);
  }

  pad.addEventListener("pointerdown", (event) => {
    if (event.button !== 0 && event.pointerType === "mouse") return;
    event.preventDefault();
    pad.setPointerCapture(event.pointerId);
    const p = point(event);
    stroke = { id: event.pointerId, ...p };
    segment(p, p); // a dot, for a tap
    schedule();
  });

  pad.addEventListener("pointermove", (event) => {
    if (!stroke || event.pointerId !== stroke.id) return;
    event.preventDefault();
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const e of events.length ? events : [event]) {
      const p = point(e);
      segment(stroke, p);
      stroke.x = p.x;
      stroke.y = p.y;
    }
    schedule();
  });

  function endStroke(event) {
    if (!stroke || event.pointerId !== stroke.id) return;
    stroke = null;
    sendNow();
  }
  pad.addEventListener("pointerup", endStroke);
  pad.addEventListener("pointercancel", endStroke);

  $("clear").addEventListener("click", () => {
    window.clearTimeout(timer);
    timer = null;
    clearPad();
    newest = posted + 1; // answers to what was drawn before are not shown
    $("upload-figure").hidden = true;
    showNothing("Draw a digit to classify it.");
  });

  // ---- sending -------------------------------------------------------------------------

  // Headers for the server: the API key, when one was typed (only in memory).
  function auth(headers) {
    const key = $("key").value.trim();
    if (key) headers.authorization = `Bearer ${key}`;
    return headers;
  }

  $("key").addEventListener("change", () => {
    holdUntil = 0;
    loadModel();
    sendNow();
  });

  // While drawing: one request at most every THROTTLE_MS.
  function schedule() {
    if (timer) return;
    const wait = Math.max(0, THROTTLE_MS - (performance.now() - lastSent));
    timer = window.setTimeout(() => {
      timer = null;
      sendDrawing();
    }, wait);
  }

  function sendNow() {
    window.clearTimeout(timer);
    timer = null;
    sendDrawing();
  }

  function sendDrawing() {
    if (!hasInk) return;
    const held = holdUntil - performance.now();
    if (held > 0) {
      setStatus(`the server asked to wait: not sending for ${Math.ceil(held / 1000)} s`);
      return;
    }
    if (inFlight) {
      again = true;
      return;
    }
    const version = drawn;
    inFlight = true;
    lastSent = performance.now();
    pad.toBlob((blob) => {
      if (!blob) {
        inFlight = false;
        showError("the browser could not encode the drawing as PNG");
        return;
      }
      // White ink on black, as MNIST: no inversion needed.
      post(blob, "image/png", "/predict?invert=no&explain=true", String(version));
    }, "image/png");
  }

  function sendFile(file) {
    if (!file) return;
    const upload = $("upload");
    if (upload.src) URL.revokeObjectURL(upload.src);
    upload.src = URL.createObjectURL(file);
    $("upload-figure").hidden = false;
    // PNG and JPEG are what /predict takes; anything else goes too, so the server says why not.
    const type = file.type || "application/octet-stream";
    inFlight = true;
    post(file, type, "/predict?explain=true", "file");
  }

  async function post(body, type, url, shown) {
    posted += 1;
    const seq = posted;
    const current = () => {
      if (seq < newest) return false;
      newest = seq;
      return true;
    };
    setStatus("classifying\u2026");
    try {
      const response = await fetch(url, {
        method: "POST",
        headers: auth({ "content-type": type }),
        body,
        cache: "no-store",
      });
      const text = await response.text();
      let json = null;
      try {
        json = JSON.parse(text);
      } catch {
        // not JSON: shown as text below
      }
      if (!current()) {
        // a newer request was answered, or the pad was cleared, meanwhile
      } else if (!response.ok) {
        showError(describeError(response, json, text));
      } else if (!json || !Array.isArray(json.predictions) || !json.predictions.length) {
        showError("the server answered without predictions");
      } else {
        showPrediction(json, shown);
      }
    } catch (error) {
      if (current()) showError(`cannot reach the server (${error.message || error})`);
    } finally {
      inFlight = false;
      if (again) {
        again = false;
        schedule();
      }
    }
  }

  function describeError(response, json, text) {
    let message = text.trim().slice(0, 300) || response.statusText;
    if (json && json.error) {
      message =
        typeof json.error === "string"
          ? json.error
          : `${json.error.message || ""} (${json.error.code || "error"})`;
    }
    let line = `${response.status}: ${message}`;
    if (response.status === 401 || response.status === 403) $("key-box").open = true;
    const retry = Number(response.headers.get("retry-after"));
    if (retry > 0) {
      // Rate limited or overloaded: the drawing is not sent again before the server says.
      holdUntil = performance.now() + 1000 * retry;
      if (!/retry/i.test(message)) line += ` \u2014 retry in ${retry} s`;
    }
    return line;
  }

  // ---- showing -------------------------------------------------------------------------

  function setStatus(text) {
    $("status").textContent = text;
  }

  function showError(text) {
    const error = $("error");
    error.textContent = text;
    error.hidden = false;
    setStatus("the server refused the request");
  }

  function showNothing(text) {
    $("error").hidden = true;
    $("predicted").textContent = "\u2013";
    $("predicted").dataset.class = "";
    $("confidence").textContent = "";
    $("bars").replaceChildren();
    $("fitted-figure").hidden = true;
    setStatus(text);
    delete document.body.dataset.shown;
  }

  function labelOf(index, fallback) {
    if (classNames && classNames[index] !== undefined) return String(classNames[index]);
    return fallback === undefined ? String(index) : String(fallback);
  }

  function showPrediction(json, shown) {
    const prediction = json.predictions[0];
    const probabilities = prediction.probabilities || [];
    $("error").hidden = true;
    const predicted = $("predicted");
    predicted.textContent = String(prediction.label);
    predicted.dataset.class = String(prediction.class);
    const p = probabilities[prediction.class];
    $("confidence").textContent = p === undefined ? "" : `${(100 * p).toFixed(1)} %`;

    const order = probabilities.map((_, i) => i).sort((a, b) => probabilities[b] - probabilities[a]);
    const items = order.slice(0, TOP).map((i) => {
      const li = document.createElement("li");
      li.dataset.class = String(i);
      if (i === prediction.class) li.className = "best";
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = i === prediction.class ? prediction.label : labelOf(i);
      const track = document.createElement("span");
      track.className = "track";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.width = `${(100 * probabilities[i]).toFixed(1)}%`;
      track.append(fill);
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = `${(100 * probabilities[i]).toFixed(1)} %`;
      li.append(label, track, value);
      return li;
    });
    $("bars").replaceChildren(...items);

    if (prediction.fitted_png) {
      $("fitted").src = `data:image/png;base64,${prediction.fitted_png}`;
      $("fitted-figure").hidden = false;
    } else {
      $("fitted-figure").hidden = true;
    }
    const model = json.model ? `${json.model.name} ${json.model.version}` : "the model";
    setStatus(`${model} \u00b7 request ${json.request_id || ""}`);
    document.body.dataset.shown = shown;
  }

  // ---- the model -----------------------------------------------------------------------

  async function getJson(url) {
    const response = await fetch(url, { cache: "no-store", headers: auth({}) });
    const text = await response.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      // handled below
    }
    if (!response.ok || !json) throw new Error(describeError(response, json, text));
    return json;
  }

  function shape(tensors) {
    return (tensors || [])
      .map((t) => `${t.name} ${t.datatype} [${(t.shape || []).join(", ")}]`)
      .join("; ");
  }

  function showSchema(rows) {
    const list = $("schema");
    list.replaceChildren();
    for (const [term, value] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = term;
      const dd = document.createElement("dd");
      dd.textContent = value;
      list.append(dt, dd);
    }
  }

  async function loadModel() {
    try {
      const ready = await getJson("/readyz");
      $("model").textContent = `model: ${ready.model} \u00b7 version ${ready.version}`;
      const meta = await getJson(`/v2/models/${encodeURIComponent(ready.model)}`);
      classNames = meta.parameters && meta.parameters.class_names;
      // The artifact's input schema: [channels, height, width] and how images are fitted to it
      // (the canvas is sent as it is, 280x280, and fitted server-side).
      const input = (meta.parameters && meta.parameters.input_shape) || [];
      const fit = (meta.parameters && meta.parameters.fit) || "";
      const [channels, height, width] = input;
      const size = height && width ? `${height}x${width}` : "";
      $("fitted-caption").textContent = size ? `what the model saw (${size})` : "what the model saw";
      if (height && width) {
        const zoom = Math.max(1, Math.round(84 / Math.max(height, width)));
        $("fitted").width = width * zoom;
        $("fitted").height = height * zoom;
      }
      const values = input.length ? input.reduce((a, b) => a * b, 1) : "";
      showSchema([
        ["name", meta.name],
        ["versions", (meta.versions || []).join(", ")],
        ["platform", meta.platform || ""],
        ["inputs (v2)", shape(meta.inputs)],
        ["outputs (v2)", shape(meta.outputs)],
        ["classes", (classNames || []).join(", ")],
        ["input", size ? `${channels} channel(s) of ${size}, images fitted by ${fit}` : ""],
        ["/predict takes", `image/png, image/jpeg, or JSON instances (${values} numbers or base64 images)`],
      ]);
    } catch (error) {
      $("model").textContent = "model: unavailable";
      showSchema([["metadata", `cannot load: ${error.message || error}`]]);
    }
  }

  // ---- files ---------------------------------------------------------------------------

  $("file").addEventListener("change", (event) => {
    sendFile(event.target.files[0]);
    event.target.value = "";
  });

  let dragDepth = 0;
  document.addEventListener("dragenter", (event) => {
    event.preventDefault();
    dragDepth += 1;
    document.body.classList.add("dragging");
  });
  document.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) document.body.classList.remove("dragging");
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    dragDepth = 0;
    document.body.classList.remove("dragging");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) sendFile(file);
  });

  clearPad();
  loadModel();
})();
