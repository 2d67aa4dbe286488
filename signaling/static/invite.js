// The host's invitation tools, on the landing page and in the meeting: a link for guests, the
// `hoovik-bot join` command line for the bot, and "Add the bot" / "Remove the bot" when the server
// can start bots. Every answer of the bot endpoints carries the bot's `state` (docs/web.md).

import * as api from "./api.js";
import { copyButton, el } from "./dom.js";

const BOT_TEXT = {
  none: "The bot is not in the meeting.",
  starting: "Starting the bot… (loading its models can take a minute)",
  stopping: "Stopping the bot…",
  joined: "The bot is in the meeting.",
};

function linkRow(id, title, hint, value, multiline = false) {
  const input = el(multiline ? "textarea.link.mono" : "input.link", { id, readOnly: true, value, spellcheck: false });
  if (multiline) input.rows = 3;
  input.addEventListener("focus", () => input.select());
  const hintNode = hint && el("p.hint", { id: `${id}-hint`, text: hint });
  if (hintNode) input.setAttribute("aria-describedby", hintNode.id);
  const label = el("label.row-title", { text: title, htmlFor: id });
  const copy = copyButton(input, "Copy", `Copy: ${title}`);
  return { row: el("div.link-row", {}, [label, hintNode, input, copy]), input };
}

/** Fill `root` with the invite tools for `room`; the bot's buttons and state go to `botRoot`
 *  (default: `root` too). Resolves, with a `refresh()` for the bot's state, once the links exist. */
export async function renderInviteTools(root, { room, hostToken, botRoot = null }) {
  root.replaceChildren(el("p.hint", { text: "Preparing invite links…" }));
  const [invite, bot, config] = await Promise.all([
    api.mintInvite(room, hostToken, "participant"),
    api.mintInvite(room, hostToken, "bot"),
    api.webConfig().catch(() => ({ botLauncher: false })),
  ]);
  const people = linkRow(
    "invite-link",
    "Guest link: share it",
    "Guests see only their own results. Anyone with this link can join (valid 24 h).",
    api.meetingLink(room, invite.token),
  );
  const fresh = el("button.secondary", { type: "button", text: "New guest link", id: "new-invite" });
  fresh.addEventListener("click", async () => {
    const next = await api.mintInvite(room, hostToken, "participant");
    people.input.value = api.meetingLink(room, next.token);
  });
  people.row.append(fresh);

  const command = linkRow("bot-command", "Bot command line", "Run this where the bot runs. Without --bundle it uses the shipped starter bundle, which needs no download (works offline); a --bundle with Wav2Vec2 audio needs `hoovik-bot models fetch` first.", api.botCommand(room, bot.token), true);
  const commandBox = el("details.bot-command", {}, [el("summary", { text: "Start the bot yourself (command line)" }), command.row]);
  const addBot = el("button.primary", { type: "button", id: "add-bot", text: "Add the bot" });
  const removeBot = el("button.secondary", { type: "button", id: "remove-bot", text: "Remove the bot", hidden: true });
  const status = el("span.status", { id: "bot-status", role: "status" });
  const botControls = el("div.bot-controls", {}, [addBot, removeBot, status]);
  if (botRoot) {
    root.replaceChildren(people.row, commandBox);
    botRoot.replaceChildren(botControls);
  } else {
    root.replaceChildren(people.row, botControls, commandBox);
  }

  if (!config.botLauncher) {
    addBot.disabled = true;
    addBot.title = "This server does not start bots";
    status.textContent = "This server cannot start the bot by itself; start it with the command line.";
    status.dataset.state = "none";
    return { refresh() {} };
  }
  const poller = new BotPoller(room, hostToken, addBot, removeBot, status);
  addBot.addEventListener("click", () => poller.launch());
  removeBot.addEventListener("click", () => poller.stop());
  poller.refresh();
  return poller;
}

class BotPoller {
  constructor(room, hostToken, button, removeButton, status) {
    Object.assign(this, { room, hostToken, button, removeButton, status, timer: null, state: "none" });
  }

  async launch() {
    this.button.disabled = true;
    this.show({ state: "starting", launched: true });
    try {
      this.show(await api.launchBot(this.room, this.hostToken));
    } catch (err) {
      this.showError(err);
    }
    this.schedule();
  }

  async stop() {
    this.removeButton.disabled = true;
    this.show({ ...this.last, state: "stopping" });
    try {
      this.show(await api.stopBot(this.room, this.hostToken));
    } catch (err) {
      this.showError(err);
    }
    this.schedule();
  }

  /** A refusal still says what the bot is doing (`state`); without one, ask the server. */
  showError(err) {
    if (err.body?.state) {
      this.show(err.body, err.message);
      return;
    }
    this.show({ state: "failed", message: err.message });
    this.refresh();
  }

  async refresh() {
    try {
      this.show(await api.botStatus(this.room, this.hostToken));
    } catch (err) {
      if (err.body?.state) this.show(err.body, err.message);
      else this.show({ state: "failed", message: err.message });
      return;
    }
    this.schedule();
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), this.state === "starting" || this.state === "stopping" ? 1000 : 4000);
  }

  show(info, note = "") {
    this.last = info;
    this.state = info.state ?? this.state;
    const busy = ["starting", "stopping", "joined"].includes(this.state);
    this.button.disabled = busy;
    this.button.hidden = busy;
    // Only a bot this server started can be removed from here.
    this.removeButton.hidden = !(info.launched && ["starting", "joined"].includes(this.state));
    this.removeButton.disabled = false;
    this.status.dataset.state = this.state;
    let text = BOT_TEXT[this.state] ?? "";
    if (this.state === "failed") text = `The bot could not run: ${info.message || "unknown error"}`;
    else if (this.state === "exited") text = `The bot has left: ${info.message || "it exited"}.`;
    else if (this.state === "joined" && info.launched === false) text = "A bot is in the meeting (started elsewhere: stop it where it runs).";
    if (note && this.state === "none") text = note; // e.g. too many bots at once: nothing was started
    this.status.textContent = text;
  }
}
