// The host's invitation tools, on the landing page and in the meeting: a link for people, the
// `hoovik-bot join` command line for the bot, and "Add the bot" when the server can start bots.

import * as api from "./api.js";
import { copyButton, el } from "./dom.js";

const BOT_TEXT = {
  none: "",
  starting: "Starting the bot… (loading its models can take a minute)",
  stopping: "Stopping the bot…",
  joined: "The bot is in the meeting.",
};

function linkRow(id, title, hint, value, multiline = false) {
  const input = el(multiline ? "textarea.link.mono" : "input.link", { id, readOnly: true, value, spellcheck: false });
  if (multiline) input.rows = 4;
  input.addEventListener("focus", () => input.select());
  return { row: el("div.link-row", {}, [el("h3", { text: title }), hint && el("p.hint", { text: hint }), input, copyButton(input)]), input };
}

/** Fill `root` with the invite tools for `room`; resolves (with a `refresh()` for the bot's state)
 *  once the invite links exist. */
export async function renderInviteTools(root, { room, hostToken }) {
  root.replaceChildren(el("p.hint", { text: "Preparing invite links…" }));
  const [invite, bot, config] = await Promise.all([
    api.mintInvite(room, hostToken, "participant"),
    api.mintInvite(room, hostToken, "bot"),
    api.webConfig().catch(() => ({ botLauncher: false })),
  ]);
  const people = linkRow("invite-link", "Invite people", "Anyone with this link can join (valid 24 h).", api.meetingLink(room, invite.token));
  const fresh = el("button.secondary", { type: "button", text: "New link", id: "new-invite" });
  fresh.addEventListener("click", async () => {
    const next = await api.mintInvite(room, hostToken, "participant");
    people.input.value = api.meetingLink(room, next.token);
  });
  people.row.append(fresh);

  const command = linkRow("bot-command", "Invite the bot", "Run this where the bot's models are:", api.botCommand(room, bot.token), true);
  const addBot = el("button.primary", { type: "button", id: "add-bot", text: "Add the bot" });
  const status = el("p.status", { id: "bot-status", role: "status" });
  command.row.append(addBot, status);
  root.replaceChildren(people.row, command.row);

  if (!config.botLauncher) {
    addBot.disabled = true;
    addBot.title = "This server does not start bots";
    status.textContent = "This server cannot start the bot by itself (start it with --bot-command); run the command above instead.";
    return { refresh() {} };
  }
  const poller = new BotPoller(room, hostToken, addBot, status);
  addBot.addEventListener("click", () => poller.launch());
  poller.refresh();
  return poller;
}

class BotPoller {
  constructor(room, hostToken, button, status) {
    Object.assign(this, { room, hostToken, button, status, timer: null });
  }

  async launch() {
    this.button.disabled = true;
    this.show({ state: "starting" });
    try {
      this.show(await api.launchBot(this.room, this.hostToken));
    } catch (err) {
      if (err.code === "bot_running" || err.code === "bot_present") this.show(err.body ?? { state: "joined" });
      else this.show({ state: "failed", message: err.message });
    }
    this.schedule();
  }

  async refresh() {
    try {
      this.show(await api.botStatus(this.room, this.hostToken));
    } catch (err) {
      this.show({ state: "failed", message: err.message });
      return;
    }
    this.schedule();
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.refresh(), this.state === "starting" || this.state === "stopping" ? 1000 : 4000);
  }

  show(info) {
    this.state = info.state;
    const busy = ["starting", "stopping", "joined"].includes(info.state);
    this.button.disabled = busy;
    this.status.dataset.state = info.state;
    const text = BOT_TEXT[info.state] ?? "";
    if (info.state === "failed") this.status.textContent = `The bot could not run: ${info.message || "unknown error"}`;
    else if (info.state === "exited") this.status.textContent = `The bot has left: ${info.message || "it exited"}.`;
    else this.status.textContent = text;
  }
}
