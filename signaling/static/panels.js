// Emotion panels: one per analysed person the viewer may see (yourself; a host sees everyone).
// A panel shows what the bot last said and never more: "not analysed" for people who opted out,
// "untrained model" whenever the bot's bundle is untrained, and how long ago the last result came.

import { el } from "./dom.js";
import { LABEL_COLOURS, WINDOW_MS, drawTimeline } from "./timeline.js";

const PROFILE_TEXT = { both: "face + voice", audio_only: "voice only", video_only: "face only" };
const STALE_MS = 3000;
const LOW_CONFIDENCE = 0.45;
const MAX_HISTORY = 1000;

class Panel {
  constructor(pid, name, isSelf) {
    this.pid = pid;
    this.history = [];
    this.count = 0;
    this.lastAt = 0;
    this.analysed = true;
    this.who = el("span.who", { text: "" });
    this.profile = el("span.profile", { text: "", title: "what the bot used for the last result", dataset: { profile: "" } });
    this.anomaly = el("span.anomaly", { text: "anomaly", title: "the anomaly detector flagged this result", hidden: true });
    this.untrained = el("p.untrained", { text: "Untrained model: these labels are not real predictions.", hidden: true });
    this.status = el("p.status", { text: "" });
    this.label = el("span.label", { text: "—" });
    this.confidence = el("span.confidence", { text: "" });
    this.bars = el("div.bars");
    this.timeline = el("canvas.timeline", { width: 300, height: 44, title: "last 60 s" });
    this.body = el("div.panel-body", {}, [
      el("div.current", {}, [this.label, this.confidence]),
      this.bars,
      el("div.timeline-wrap", {}, [this.timeline, el("span.axis", { text: "last 60 s" })]),
    ]);
    this.el = el("article.panel", { dataset: { pid, count: "0", state: "waiting" } }, [
      el("header", {}, [this.who, this.profile, this.anomaly]),
      this.untrained,
      this.status,
      this.body,
    ]);
    this.setName(name, isSelf);
  }

  setName(name, isSelf) {
    this.who.textContent = `${name || this.pid}${isSelf ? " (you)" : ""}`;
  }

  update(msg) {
    const result = msg.result ?? {};
    this.count += 1;
    this.lastAt = Date.now();
    this.el.dataset.count = String(this.count);
    this.el.dataset.trained = String(msg.trained !== false);
    this.label.textContent = msg.error ? "no prediction" : result.emotion ?? "—";
    this.label.style.color = LABEL_COLOURS[result.emotion] ?? "";
    const confidence = result.confidence ?? 0;
    // Below the bot's threshold the label falls back to neutral/calm and keeps the top score: say so.
    const low = !msg.error && confidence < LOW_CONFIDENCE ? " · low confidence" : "";
    this.confidence.textContent = msg.error ? msg.error : `${Math.round(confidence * 100)}%${low}`;
    this.profile.textContent = PROFILE_TEXT[result.modality] ?? result.modality ?? "—";
    this.profile.dataset.profile = result.modality ?? "";
    this.anomaly.hidden = result.anomaly !== true;
    this.renderBars(result.probs);
    this.history.push({ t: this.lastAt, label: result.emotion, confidence: result.confidence ?? 0, anomaly: !!result.anomaly });
    if (this.history.length > MAX_HISTORY) this.history.splice(0, this.history.length - MAX_HISTORY);
    this.tick(this.lastAt);
  }

  renderBars(probs) {
    if (!probs) {
      this.bars.replaceChildren(el("p.hint", { text: "no probabilities in this result" }));
      return;
    }
    const rows = Object.entries(probs).map(([label, p]) => {
      const fill = el("span.fill");
      fill.style.width = `${Math.round(p * 100)}%`;
      fill.style.background = LABEL_COLOURS[label] ?? "#777";
      return el("div.bar", { dataset: { label } }, [
        el("span.name", { text: label }),
        el("span.track", {}, [fill]),
        el("span.value", { text: `${Math.round(p * 100)}%` }),
      ]);
    });
    this.bars.replaceChildren(...rows);
  }

  /** Forget every result shown (an opt-out): nothing of theirs stays on screen. */
  reset() {
    this.count = 0;
    this.history = [];
    this.el.dataset.count = "0";
    this.profile.textContent = "";
    this.profile.dataset.profile = "";
    this.anomaly.hidden = true;
    this.label.textContent = "—";
    this.confidence.textContent = "";
    this.bars.replaceChildren();
  }

  /** Refresh what depends on time: the sliding timeline and the waiting/stale/live status. */
  tick(now, botPresent = true) {
    while (this.history.length && now - this.history[0].t > WINDOW_MS) this.history.shift();
    let state;
    let text;
    if (!this.analysed) [state, text] = ["not-analysed", "not analysed"];
    else if (!botPresent) [state, text] = ["no-bot", "The bot is not in this meeting, so nobody is analysed."];
    else if (!this.count) [state, text] = ["waiting", "Waiting for the bot's first result…"];
    else if (now - this.lastAt > STALE_MS) [state, text] = ["stale", `No result for ${Math.round((now - this.lastAt) / 1000)} s (no face or voice detected, or media stopped).`];
    else [state, text] = ["live", ""];
    this.el.dataset.state = state;
    this.status.textContent = text;
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
    this.trained = null;
    this.subjects = new Set();
  }

  ensure(pid, name, isSelf) {
    let panel = this.panels.get(pid);
    if (!panel) {
      panel = new Panel(pid, name, isSelf);
      this.panels.set(pid, panel);
      if (isSelf) this.root.prepend(panel.el);
      else this.root.append(panel.el);
      this.applyTrained(panel);
      panel.tick(Date.now(), this.botPresent);
    } else {
      panel.setName(name, isSelf);
    }
    return panel;
  }

  remove(pid) {
    this.panels.get(pid)?.el.remove();
    this.panels.delete(pid);
  }

  setAnalysed(pid, analysed) {
    const panel = this.panels.get(pid);
    if (!panel) return;
    panel.analysed = analysed;
    if (!analysed) panel.reset();
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
    if (typeof msg.trained === "boolean" && msg.trained !== this.trained) {
      this.trained = msg.trained;
      for (const p of this.panels.values()) this.applyTrained(p);
    }
    panel.update(msg);
  }

  applyTrained(panel) {
    panel.untrained.hidden = this.trained !== false;
  }

  tick() {
    const now = Date.now();
    for (const panel of this.panels.values()) panel.tick(now, this.botPresent);
  }
}
