// HyperVer browser page: enroll (POST /v1/enroll) and try to unlock (POST /v1/users/{id}/unlock).
// Plain JS, no build step, nothing loaded from elsewhere. Result areas carry data-state
// ("idle" | "pending" | "done" | "error") so tests (and screen readers, via aria-live) can follow them.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "hyperver-api-key";

// -- API key (session storage: gone when the tab closes) -----------------------------------------
function apiKey() {
  return $("api-key").value.trim();
}

function initKey() {
  const field = $("api-key");
  try {
    field.value = sessionStorage.getItem(KEY_STORAGE) || "";
  } catch (e) { /* storage disabled: the field still works for this page */ }
  field.addEventListener("input", () => {
    try { sessionStorage.setItem(KEY_STORAGE, field.value.trim()); } catch (e) { /* ignore */ }
  });
}

// -- calls ----------------------------------------------------------------------------------------
async function callApi(path, form) {
  let response;
  try {
    response = await fetch(path, {method: "POST", body: form, headers: {"X-API-Key": apiKey()}});
  } catch (e) {
    return {ok: false, status: 0, body: {error: "network", detail: "the server cannot be reached: " + e.message}};
  }
  let body;
  try {
    body = await response.json();
  } catch (e) {
    body = {error: "bad_response", detail: "HTTP " + response.status + " without a JSON body"};
  }
  return {ok: response.ok, status: response.status, body: body};
}

function errorText(result) {
  const d = result.body && result.body.detail;
  if (Array.isArray(d)) return d.map((e) => (e.loc || []).join(".") + ": " + e.msg).join("; ");
  return String(d || (result.body && result.body.error) || ("HTTP " + result.status));
}

async function loadStatus() {
  const el = $("server-status");
  try {
    const r = await fetch("/healthz");
    const h = await r.json();
    el.textContent = "Server ready: f version " + h.f_version + ", threshold " + fmt(h.threshold) +
      farText(h.threshold_far) + ", " + h.users + " enrolled user" + (h.users === 1 ? "" : "s") + ".";
    showThresholdNote(h);
    el.dataset.state = "done";
  } catch (e) {
    el.textContent = "The server does not answer /healthz.";
    el.dataset.state = "error";
  }
}

function fmt(x) {
  return typeof x === "number" ? x.toFixed(4) : String(x);
}

function farText(far) {
  return typeof far === "number" ? " (FAR " + far + ")" : "";
}

// server.unlock_far: the page decides at a more lenient threshold than a device when the generator stores one.
function pageThreshold(unlockFar) {
  return unlockFar && typeof unlockFar.threshold === "number" ? unlockFar : null;
}

function showThresholdNote(h) {
  const note = $("threshold-note");
  const page = pageThreshold(h.unlock_far);
  if (page && page.threshold !== h.threshold) {
    note.textContent = "This page decides at FAR " + page.far + " (threshold " + fmt(page.threshold) + "), more " +
      "leniently than a device, which decides at the signed model's threshold " + fmt(h.threshold) +
      farText(h.threshold_far) + ". Today's per-user verifiers are weak: expect your own face to be denied " +
      "often, even here.";
  } else if (h.unlock_far && h.unlock_far.note) {
    note.textContent = "This page decides as a device does: " + h.unlock_far.note + ".";
  } else {
    note.hidden = true;
    return;
  }
  note.hidden = false;
}

// -- photos: a chosen file or a webcam frame --------------------------------------------------------
// photo[form] = {blob, name}; a new file choice or capture replaces it.
const photo = {enroll: null, unlock: null};

function setPhoto(which, blob, name) {
  photo[which] = blob ? {blob: blob, name: name} : null;
  const img = $(which + "-preview");
  if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
  if (blob) {
    img.dataset.url = URL.createObjectURL(blob);
    img.src = img.dataset.url;
    img.hidden = false;
  } else {
    img.removeAttribute("src");
    delete img.dataset.url;
    img.hidden = true;
  }
}

function initFileInput(which) {
  $(which + "-photo").addEventListener("change", (ev) => {
    const file = ev.target.files && ev.target.files[0];
    setPhoto(which, file || null, file ? file.name : "");
  });
}

// -- webcam -----------------------------------------------------------------------------------------
const camera = {stream: null, target: null};

function webcamSupport() {
  if (!window.isSecureContext) {
    return "Webcam capture needs a secure context (https or http://localhost); choose a photo file instead.";
  }
  if (!navigator.mediaDevices || typeof navigator.mediaDevices.getUserMedia !== "function") {
    return "This browser offers no camera access (getUserMedia); choose a photo file instead.";
  }
  return "";
}

function initWebcam() {
  const why = webcamSupport();
  const buttons = document.querySelectorAll(".webcam-button");
  if (why) {
    buttons.forEach((b) => { b.disabled = true; b.hidden = true; });
    $("webcam-note").textContent = why;
    $("webcam-note").hidden = false;
    return;
  }
  $("enroll-webcam").addEventListener("click", () => openCamera("enroll"));
  $("unlock-webcam").addEventListener("click", () => openCamera("unlock"));
  $("camera-capture").addEventListener("click", capture);
  $("camera-cancel").addEventListener("click", closeCamera);
}

async function openCamera(which) {
  camera.target = which;
  $("camera-error").textContent = "";
  $("camera").hidden = false;
  $("camera").dataset.state = "pending";
  try {
    camera.stream = await navigator.mediaDevices.getUserMedia({video: {width: {ideal: 640}, height: {ideal: 480}},
                                                                audio: false});
    const video = $("camera-video");
    video.srcObject = camera.stream;
    await video.play();
    $("camera").dataset.state = "done";
  } catch (e) {
    $("camera-error").textContent = "No camera: " + (e.message || e.name) + ". Choose a photo file instead.";
    $("camera").dataset.state = "error";
  }
}

function closeCamera() {
  if (camera.stream) camera.stream.getTracks().forEach((t) => t.stop());
  camera.stream = null;
  $("camera-video").srcObject = null;
  $("camera").hidden = true;
}

function capture() {
  const video = $("camera-video");
  const canvas = $("camera-canvas");
  if (!camera.stream || !video.videoWidth) {
    $("camera-error").textContent = "The camera has not delivered a frame yet.";
    return;
  }
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  const which = camera.target;
  canvas.toBlob((blob) => {
    if (!blob) {
      $("camera-error").textContent = "Could not encode the frame.";
      return;
    }
    $(which + "-photo").value = "";          // the captured frame replaces a chosen file
    setPhoto(which, blob, "webcam.jpg");
    closeCamera();
  }, "image/jpeg", 0.92);
}

// -- result areas -----------------------------------------------------------------------------------
function setState(id, state) {
  $(id).dataset.state = state;
}

function missing(which, resultId, errorId) {
  const user = $(which + "-user").value.trim();
  let why = "";
  if (!apiKey()) why = "Enter the API key first.";
  else if (!user) why = "Enter a user id.";
  else if (!photo[which]) why = "Choose a photo or capture one with the webcam.";
  if (why) {
    $(errorId).textContent = why;
    setState(resultId, "error");
  }
  return why;
}

// -- enroll -----------------------------------------------------------------------------------------
let lastModel = null;   // {user, url} of the last enrollment, for the download button

async function enroll(ev) {
  ev.preventDefault();
  $("enroll-message").textContent = "";
  $("enroll-error").textContent = "";
  $("enroll-details").hidden = true;
  $("enroll-download").hidden = true;
  if (missing("enroll", "enroll-result", "enroll-error")) return;
  const user = $("enroll-user").value.trim();
  const form = new FormData();
  form.append("user_id", user);
  form.append("photos", photo.enroll.blob, photo.enroll.name);
  form.append("replace", $("enroll-replace").checked ? "true" : "false");
  setState("enroll-result", "pending");
  $("enroll-message").textContent = "Enrolling " + user + "...";
  $("enroll-submit").disabled = true;
  const r = await callApi("/v1/enroll", form);
  $("enroll-submit").disabled = false;
  if (!r.ok) {
    $("enroll-message").textContent = "Not enrolled.";
    let text = errorText(r);
    if (r.status === 409) {
      text += " (tick \u201cReplace an existing enrollment\u201d to replace it)";
      $("enroll-replace").parentElement.classList.add("attention");
    }
    $("enroll-error").textContent = text;
    setState("enroll-result", "error");
    return;
  }
  const b = r.body;
  $("enroll-replace").parentElement.classList.remove("attention");
  $("enroll-message").textContent = (b.replaced ? "Re-enrolled " : "Enrolled ") + b.user_id + ".";
  fillDetails($("enroll-details"), [
    ["f version", b.f_version], ["threshold", fmt(b.threshold)],
    ["model", b.runtime + " " + b.precision + ", " + b.model_bytes + " bytes (signed)"],
    ["model sha256", String(b.model_sha256).slice(0, 16) + "\u2026"], ["time on the server", b.ms + " ms"]]);
  lastModel = {user: b.user_id, url: b.model_url};
  $("enroll-download").hidden = false;
  $("unlock-user").value = b.user_id;
  setState("enroll-result", "done");
  loadStatus();
}

function fillDetails(dl, rows) {
  dl.textContent = "";
  rows.forEach(([k, v]) => {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dl.append(dt, dd);
  });
  dl.hidden = false;
}

async function downloadModel() {
  if (!lastModel) return;
  const r = await fetch(lastModel.url, {headers: {"X-API-Key": apiKey()}});
  if (!r.ok) {
    $("enroll-error").textContent = "Download failed: HTTP " + r.status;
    return;
  }
  const url = URL.createObjectURL(await r.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = lastModel.user + ".hva";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// -- unlock -----------------------------------------------------------------------------------------
async function unlock(ev) {
  ev.preventDefault();
  const verdict = $("unlock-verdict");
  verdict.textContent = "";
  verdict.className = "verdict";
  delete verdict.dataset.decision;
  $("unlock-error").textContent = "";
  $("unlock-details").hidden = true;
  if (missing("unlock", "unlock-result", "unlock-error")) return;
  const user = $("unlock-user").value.trim();
  const form = new FormData();
  form.append("photo", photo.unlock.blob, photo.unlock.name);
  setState("unlock-result", "pending");
  verdict.textContent = "Checking\u2026";
  $("unlock-submit").disabled = true;
  const r = await callApi("/v1/users/" + encodeURIComponent(user) + "/unlock", form);
  $("unlock-submit").disabled = false;
  if (!r.ok) {
    verdict.textContent = "Error";
    verdict.classList.add("error");
    $("unlock-error").textContent = errorText(r);
    setState("unlock-result", "error");
    return;
  }
  const b = r.body;
  // The page's decision: at server.unlock_far's threshold when the server has one, else the device's.
  const page = pageThreshold(b.unlock_far);
  const shown = page || b;
  verdict.textContent = shown.unlock ? "Unlocked" : "Denied";
  verdict.classList.add(shown.unlock ? "unlocked" : "denied");
  verdict.dataset.decision = shown.decision;
  const score = $("unlock-score");
  score.textContent = fmt(b.score);
  score.dataset.value = String(b.score);
  const threshold = $("unlock-threshold");
  threshold.textContent = fmt(shown.threshold) + (page ? " (FAR " + page.far + ", this page)" : farText(b.threshold_far));
  threshold.dataset.value = String(shown.threshold);
  const device = $("unlock-device");
  device.textContent = (b.unlock ? "Unlocked" : "Denied") + " at the signed model's threshold " + fmt(b.threshold) +
    farText(b.threshold_far);
  device.dataset.decision = b.decision;
  device.dataset.threshold = String(b.threshold);
  $("unlock-model").textContent = b.runtime + " " + b.precision + ", " + b.f_version;
  const ms = b.ms || {};
  $("unlock-ms").textContent = "align " + ms.align + " ms, score " + ms.score + " ms" +
    (b.verifier_cached ? " (model already loaded)" : ", load " + ms.load + " ms");
  $("unlock-details").hidden = false;
  setState("unlock-result", "done");
}

document.addEventListener("DOMContentLoaded", () => {
  initKey();
  initFileInput("enroll");
  initFileInput("unlock");
  initWebcam();
  $("enroll-form").addEventListener("submit", enroll);
  $("unlock-form").addEventListener("submit", unlock);
  $("enroll-download").addEventListener("click", downloadModel);
  loadStatus();
});
