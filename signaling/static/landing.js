// The landing page: create a room, then hand out the host link, invite links and the bot.

import * as api from "./api.js";
import { $, copyButton, show } from "./dom.js";
import { renderInviteTools } from "./invite.js";

const params = new URLSearchParams(location.search);
if (params.get("room")) {
  // joinUrl from POST /rooms points here; without a token nobody can be let in.
  $("#need-invite-room").textContent = params.get("room");
  show($("#need-invite"));
}

$("#create-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("#create-btn");
  const error = $("#create-error");
  button.disabled = true;
  show(error, false);
  try {
    const room = await api.createRoom($("#room-name").value.trim());
    await showRoom(room);
  } catch (err) {
    error.textContent = `The room could not be created: ${err.message}`;
    show(error);
    button.disabled = false;
  }
});

async function showRoom(room) {
  $("#room-title").textContent = room.name || room.roomId;
  const hostLink = api.meetingLink(room.roomId, room.hostToken, { host: true });
  const input = $("#host-link");
  input.value = hostLink;
  input.after(copyButton(input, "Copy", "Copy your host link"));
  $("#open-meeting").href = hostLink;
  show($("#create"), false);
  show($("#links"));
  await renderInviteTools($("#invite-tools"), { room: room.roomId, hostToken: room.hostToken });
  $("#links").dataset.ready = "true";
}
