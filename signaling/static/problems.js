// What the meeting page says when someone is not (or no longer) in the meeting, and the top bar's
// connection badges. Every server error code a person can run into has words here.

import { $, show } from "./dom.js";

const ASK_HOST = "Ask the host for a new invite link.";
const PROBLEMS = {
  incomplete: ["This link is incomplete", "Open the whole invite link the host sent you: it holds the room and a token."],
  bad_field: ["This link is incomplete", "Open the whole invite link the host sent you: it holds the room and a token."],
  token_expired: ["This invite link has expired", ASK_HOST],
  token_bad_signature: ["This invite link is not valid", `It was not issued by this server, or it was changed. ${ASK_HOST}`],
  token_malformed: ["This invite link is not valid", "The link is damaged or cut short; check that you copied all of it."],
  token_wrong_room: ["This invite link is for another meeting", ASK_HOST],
  room_not_found: ["This meeting has ended", "It does not exist any more. Ask the host to start a new one."],
  room_full: ["This meeting is full", "Try again when someone has left."],
  bot_invite: ["This is the bot's invite", "Bot invites are for the hoovik-bot join command, not for a browser."],
  replaced: ["You joined from somewhere else", "This tab left the meeting because you joined it again in another tab or window."],
  shutting_down: ["The server is restarting", "Rejoin in a moment."],
  network: ["The server cannot be reached", "Check your connection, then reload this page."],
  connection_failed: ["The server cannot be reached", "Check your connection, then reload this page."],
  left: ["You left the meeting", "Rejoin with the same link whenever you like."],
};

export function showProblem(code, detail = "") {
  const [title, text] = PROBLEMS[code] ?? ["You are not in the meeting", detail || `The server said: ${code}.`];
  const box = $("#problem");
  box.dataset.code = code;
  $("#problem-title").textContent = title;
  $("#problem-text").textContent = text;
  show(box);
  show($("#prejoin"), false);
  show($("#call"), false);
  // Not in a meeting: no connection badges (a red "not connected" over an error page only alarms).
  for (const badge of ["#conn-signaling", "#conn-bot"]) show($(badge), false);
  document.title = `${title} — Hoovik Bot`;
}

export function setConn(selector, state, text) {
  const node = $(selector);
  node.dataset.state = state;
  node.textContent = text;
  show(node, true);
}
