// Emotion panels: one per analysed person the viewer may see (yourself; a host sees everyone).
// A panel shows what the bot last said and never more. Its headline is the label the result
// carries; when that label is the bot's neutral fallback or differs from the bars, the panel says
// why. It shows the results per second that actually arrive, and says why a panel is empty.

import { el } from "./dom.js";
import { resultView } from "./headline.js";
import { LABEL_COLOURS, WINDOW_MS, drawTimeline } from "./timeline.js";

const PROFILE_TEXT = { both: "face + voice", audio_only: "voice only", video_only: "face only" };
const STALE_MS = 3000;
const SLOW_FIRST_RESULT_MS = 20_000;
const RATE_WINDOW_MS = 10_000;
const MIN_RATE_SPAN_MS = 3000;
const MAX_HISTORY = 1000;

class Panel {
  constructor(pid, name, isSelf) {
    this.pid = pid;
    this.isSelf = isSelf;
    this.history = [];
    this.arrivals = [];
    this.count = 0;
    this.lastAt = 0;
    this.firstWaitAt = Date.now();
    this.analysed = true;
    this.media = { mic: true, camera: true };
    this.who = el("h3.who", { text: "" });
    this.profile = el("span.badge.profile", { text: "", dataset: { profile: "" } });
    this.rate = el("span.badge.rate", { text: "", dataset: { rate: "" }, title: "results per second that reached this page (last 10 s)" });
    this.reduced = el("span.badge.reduced", {
      text: "reduced rate",
      title: "The bot is busy and sends fewer results for this person than its usual 3.3 per second.",
      hidden: true,
    });
    this.anomaly = el("span.badge.anomaly", { text: "unusual input", title: "the anomaly detector flagged this result", hidden: true });
    this.untrained = el("p.untrained", { text: "Untrained model: these labels are not real predictions.", hidden: true });
    this.status = el("p.status", { text: "" });
    this.label = el("span.label", { text: "—" });
    this.confidence = el("span.confidence", { text: "" });
    this.reason = el("p.reason", { text: "", hidden: true });
    this.bars = el("div.bars", { role: "list", "aria-label": "scores of the latest moment" });
    this.timeline = el("canvas.timeline", { width: 300, height: 36, role: "img", "aria-label": "labels of the last 60 s" });
    this.body = el("div.panel-body", {}, [
      el("div.current", {}, [this.label, this.confidence]),
      this.reason,
      this.bars,
      el("div.timeline-wrap", {}, [this.timeline, el("span.axis", { text: "last 60 s", "aria-hidden": "true" })]),
    ]);
    this.el = el("article.panel", { dataset: { pid, count: "0", state: "waiting", fallback: "false", reduced: "false" } }, [
      el("header", {}, [this.who, el("span.badges", {}, [this.profile, this.rate, this.reduced, this.anomaly])]),
      this.untrained,
      this.status,
      this.body,
    ]);
    this.setName(name, isSelf);
  }

  setName(name, isSelf) {
    this.who.textContent = `${name || this.pid}${isSelf ? " (you)" : ""}`;
    this.el.setAttribute("aria-label", `Emotions of ${name || this.pid}${isSelf ? " (you)" : ""}`);
  }

  update(msg) {
    const result = msg.result ?? {};
    const now = Date.now();
    this.count += 1;
    this.lastAt = now;
    this.arrivals.push(now);
    this.el.dataset.count = String(this.count);
    this.el.dataset.trained = String(msg.trained !== false);
    this.untrained.hidden = msg.trained !== false;
    const view = resultView(msg);
    this.label.textContent = view.label;
    // The label's colour marks it (as in the bars and the timeline); the text stays dark to read.
    this.label.style.borderLeftColor = LABEL_COLOURS[view.colourKey] ?? "transparent";
    this.confidence.textContent = view.confidence;
    this.reason.textContent = view.reason;
    this.reason.hidden = !view.reason;
    this.el.dataset.fallback = String(view.fallback);
    this.el.dataset.headline = view.label;
    this.renderProfile(result.modality);
    this.anomaly.hidden = result.anomaly !== true;
    this.reduced.hidden = msg.reducedRate !== true;
    this.el.dataset.reduced = String(msg.reducedRate === true);
    this.renderBars(result.probs, view);
    this.history.push({ t: now, label: result.emotion, confidence: result.confidence ?? 0, anomaly: !!result.anomaly });
    if (this.history.length > MAX_HISTORY) this.history.splice(0, this.history.length - MAX_HISTORY);
    this.tick(now);
  }

  renderProfile(modality) {
    const text = PROFILE_TEXT[modality] ?? modality ?? "—";
    // The bot leaves out a modality it has nothing recent of (no face found, silence, or it is busy):
    // say so when this person is in fact sending that media.
    let note = "";
    if (modality === "audio_only" && this.media.camera) note = "no face seen";
    else if (modality === "video_only" && this.media.mic) note = "no voice heard";
    this.profile.textContent = note ? `${text} (${note})` : text;
    this.profile.title = note
      ? `The bot used only the ${modality === "audio_only" ? "voice" : "face"} for this result: it had no recent ${note === "no face seen" ? "face (out of view, or the bot is busy)" : "speech"}.`
      : "what the bot used for the latest result";
    this.profile.dataset.profile = modality ?? "";
  }

  renderBars(probs, view) {
    if (!probs) {
      this.bars.replaceChildren(el("p.hint", { text: "no scores in this result" }));
      return;
    }
    const rows = Object.entries(probs).map(([label, p]) => {
      const fill = el("span.fill");
      fill.style.width = `${Math.round(p * 100)}%`;
      fill.style.background = LABEL_COLOURS[label] ?? "#777";
      const marks = [];
      if (label === view.top) marks.push("highest");
      if (label === view.colourKey) marks.push("shown");
      return el("div.bar", { role: "listitem", dataset: { label, mark: marks.join(" ") } }, [
        el("span.name", { text: label }),
        el("span.track", { "aria-hidden": "true" }, [fill]),
        el("span.value", { text: `${Math.round(p * 100)}%` }),
      ]);
    });
    this.bars.replaceChildren(...rows);
  }

  /** Results per second that reached this page over the last RATE_WINDOW_MS, or null. */
  measuredRate(now) {
    while (this.arrivals.length && now - this.arrivals[0] > RATE_WINDOW_MS) this.arrivals.shift();
    const n = this.arrivals.length;
    // At least 3 s of arrivals: the first results after a join can come in a burst.
    const span = n < 3 ? 0 : this.arrivals[n - 1] - this.arrivals[0];
    return span >= MIN_RATE_SPAN_MS ? ((n - 1) * 1000) / span : null;
  }

  /** Forget every result shown (an opt-out): nothing of theirs stays on screen. */
  reset() {
    this.count = 0;
    this.history = [];
    this.arrivals = [];
    this.el.dataset.count = "0";
    this.profile.textContent = "";
    this.profile.dataset.profile = "";
    this.anomaly.hidden = true;
    this.reduced.hidden = true;
    this.untrained.hidden = true;
    this.label.textContent = "—";
    this.confidence.textContent = "";
    this.reason.hidden = true;
    this.bars.replaceChildren();
  }

  setMedia(mic, camera) {
    const before = this.media.mic || this.media.camera;
    this.media = { mic, camera };
    if (!before && (mic || camera)) this.firstWaitAt = Date.now();
  }

  /** Refresh what depends on time: the sliding timeline, the rate and the panel's status. */
  tick(now, botPresent = true) {
    while (this.history.length && now - this.history[0].t > WINDOW_MS) this.history.shift();
    const noMedia = !this.media.mic && !this.media.camera;
    let state;
    let text;
    if (!this.analysed) {
      [state, text] = ["not-analysed", this.isSelf
        ? "Not analysed: you turned analysis off. Tick “Analyse me” to resume."
        : "Not analysed: this person turned analysis off."];
    } else if (!botPresent) {
      [state, text] = ["no-bot", "The bot is not in this meeting, so nobody is analysed."];
    } else if (noMedia && (!this.count || now - this.lastAt > STALE_MS)) {
      [state, text] = ["no-media", this.isSelf
        ? "Your camera and microphone are off or missing: the bot has nothing of yours to analyse."
        : "Camera and microphone off: the bot has nothing to analyse."];
    } else if (!this.count) {
      [state, text] = now - this.firstWaitAt > SLOW_FIRST_RESULT_MS
        ? ["waiting", "No result yet: the bot needs a face in view or a voice it can hear."]
        : ["waiting", "Waiting for the bot's first result…"];
    } else if (now - this.lastAt > STALE_MS) {
      [state, text] = ["stale", `No result for ${Math.round((now - this.lastAt) / 1000)} s (no face or voice detected, or media stopped).`];
    } else {
      [state, text] = ["live", ""];
    }
    this.el.dataset.state = state;
    this.status.textContent = text;
    if (state === "not-analysed") this.untrained.hidden = true;
    const rate = state === "live" ? this.measuredRate(now) : null;
    this.rate.hidden = rate === null;
    this.rate.textContent = rate === null ? "" : `${rate.toFixed(1)}/s`;
    this.rate.dataset.rate = rate === null ? "" : rate.toFixed(2);
    this.body.hidden = state === "not-analysed" || !this.count;
    if (!this.body.hidden) drawTimeline(this.timeline, this.history, now);
  }
}

/** Every panel the viewer sees, keyed by participantId. */
export class PanelBoard {
  constructor(root) {
    this.root = root;
    this.panels = new Map();
    this.botPresent = false;
    this.subjects = new Set();
  }

  ensure(pid, name, isSelf) {
    let panel = this.panels.get(pid);
    if (!panel) {
      panel = new Panel(pid, name, isSelf);
      this.panels.set(pid, panel);
      if (isSelf) this.root.prepend(panel.el);
      else this.root.append(panel.el);
      panel.tick(Date.now(), this.botPresent);
    } else {
      panel.setName(name, isSelf);
    }
    this.root.dataset.count = String(this.panels.size);
    return panel;
  }

  remove(pid) {
    this.panels.get(pid)?.el.remove();
    this.panels.delete(pid);
    this.root.dataset.count = String(this.panels.size);
  }

  setAnalysed(pid, analysed) {
    const panel = this.panels.get(pid);
    if (!panel) return;
    panel.analysed = analysed;
    if (!analysed) panel.reset();
    panel.tick(Date.now(), this.botPresent);
  }

  setMedia(pid, mic, camera) {
    const panel = this.panels.get(pid);
    if (!panel) return;
    panel.setMedia(mic, camera);
    panel.tick(Date.now(), this.botPresent);
  }

  setBotPresent(present) {
    this.botPresent = present;
    this.tick();
  }

  /** A result from the bot (data channel or signaling relay). Opted-out people's late results are dropped. */
  onResult(msg) {
    if (!msg || msg.event !== "emotion.result" || typeof msg.participantId !== "string") return;
    if (!this.subjects.has(msg.participantId)) {
      // Whose results reached this viewer at all (tests and support read it from the DOM).
      this.subjects.add(msg.participantId);
      this.root.dataset.subjects = [...this.subjects].sort().join(" ");
    }
    const panel = this.panels.get(msg.participantId);
    if (!panel || !panel.analysed) return;
    panel.update(msg);
  }

  tick() {
    const now = Date.now();
    for (const panel of this.panels.values()) panel.tick(now, this.botPresent);
  }
}
