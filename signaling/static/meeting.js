// The meeting page: check the invite, join with camera and mic, connect to the bot and to everyone
// else, and show the emotion panels (your own; a host sees everyone's).

import * as api from "./api.js";
import { $, el, show } from "./dom.js";
import { renderInviteTools } from "./invite.js";
import { acquireMedia } from "./media.js";
import { PanelBoard } from "./panels.js";
import { BotLink, MeshLink, offersTo } from "./peers.js";
import { setConn, showProblem } from "./problems.js";
import { SignalingSocket } from "./signaling.js";
import { Tiles } from "./tiles.js";

class Meeting {
  constructor(room, token, invite) {
    Object.assign(this, { room, token, invite, role: invite.role, isHost: invite.role === "host" });
    this.pidKey = `hoovik:pid:${room}:${token.slice(-16)}`;
    this.members = new Map();
    this.bots = new Map();
    this.mesh = new Map();
    this.tiles = new Tiles($("#tiles"));
    this.board = new PanelBoard($("#panels"));
    this.local = { stream: new MediaStream(), mic: false, camera: false, analysis: true, name: "" };
    this.send = (msg) => this.socket?.send(msg);
  }

  async join(name, analysis) {
    Object.assign(this.local, { name, analysis });
    const { stream, problems } = await acquireMedia();
    this.local.stream = stream;
    this.local.mic = stream.getAudioTracks().length > 0;
    this.local.camera = stream.getVideoTracks().length > 0;
    $("#notices").replaceChildren(...problems.map((p) => el("p.notice.media-problem", { text: p.text, dataset: { device: p.device } })));
    setConn("#conn-signaling", "connecting", "Connecting…");
    this.socket = new SignalingSocket(api.signalingUrl(), {
      onMessage: (msg) => this.onMessage(msg).catch((err) => console.warn("signaling message failed", msg.type, err)),
      onClose: (err) => this.onClosed(err),
    });
    let welcome;
    try {
      welcome = await this.socket.join({
        room: this.room,
        role: this.role,
        token: this.token,
        participantId: sessionStorage.getItem(this.pidKey) ?? this.invite.participantId ?? null,
        // Proves a reload is the same person: only then may it replace its own stale connection.
        resumeKey: sessionStorage.getItem(`${this.pidKey}:resume`) ?? undefined,
        name,
      });
    } catch (err) {
      this.stopMedia();
      showProblem(err.code, err.message);
      return;
    }
    this.selfId = welcome.participantId;
    sessionStorage.setItem(this.pidKey, this.selfId);
    if (welcome.resumeKey) sessionStorage.setItem(`${this.pidKey}:resume`, welcome.resumeKey);
    setConn("#conn-signaling", "connected", "In the meeting");
    show($("#prejoin"), false);
    show($("#call"));
    $("#call").dataset.self = this.selfId;
    $("#panels-title").textContent = this.isHost ? "Everyone's emotions" : "Your emotions";
    this.tiles.ensure(this.selfId, `${name || "You"} (you)`, true).setStream(stream);
    this.board.ensure(this.selfId, name, true);
    this.setupControls();
    this.setAnalysisView(this.selfId, analysis);
    this.announce();
    for (const p of welcome.participants) this.addMember(p);
    this.updateBotPresence();
    this.ticker = setInterval(() => this.board.tick(), 1000);
    if (this.isHost) {
      const tools = $("#host-tools");
      show(tools);
      show($("#bot-tools"));
      // Open while the host is alone; folded away once the meeting starts (see addMember).
      tools.open = this.members.size === 0;
      renderInviteTools($("#host-tools-body"), { room: this.room, hostToken: this.token, botRoot: $("#bot-tools") })
        .then((t) => (this.inviteTools = t))
        .catch((err) => {
          $("#host-tools-body").replaceChildren(el("p.error", { text: `Invite links unavailable: ${err.message}` }));
        });
    }
  }

  /** The meeting has started (someone else or the bot is here): fold the invite tools, once. */
  meetingStarted() {
    if (this.started) return;
    this.started = true;
    $("#host-tools").open = false;
  }

  // -- controls ------------------------------------------------------------------------------------

  setupControls() {
    const audio = this.local.stream.getAudioTracks()[0];
    const video = this.local.stream.getVideoTracks()[0];
    $("#mic-btn").disabled = !audio;
    $("#cam-btn").disabled = !video;
    $("#mic-btn").addEventListener("click", () => {
      this.local.mic = !this.local.mic;
      audio.enabled = this.local.mic;
      this.renderControls();
      this.announce();
    });
    $("#cam-btn").addEventListener("click", () => {
      this.local.camera = !this.local.camera;
      video.enabled = this.local.camera;
      this.renderControls();
      this.announce();
    });
    const toggle = $("#analysis-toggle");
    toggle.checked = this.local.analysis;
    toggle.addEventListener("change", () => this.setAnalysis(toggle.checked));
    $("#leave-btn").addEventListener("click", () => this.leave());
    this.renderControls();
  }

  renderControls() {
    const { mic, camera } = this.local;
    const micBtn = $("#mic-btn");
    const camBtn = $("#cam-btn");
    micBtn.textContent = micBtn.disabled ? "No microphone" : mic ? "Mute mic" : "Unmute mic";
    camBtn.textContent = camBtn.disabled ? "No camera" : camera ? "Stop camera" : "Start camera";
    micBtn.dataset.on = String(mic);
    camBtn.dataset.on = String(camera);
    micBtn.setAttribute("aria-pressed", String(!micBtn.disabled && !mic));
    camBtn.setAttribute("aria-pressed", String(!camBtn.disabled && !camera));
    this.tiles.setMedia(this.selfId, mic, camera);
    this.board.setMedia(this.selfId, mic, camera);
  }

  announce() {
    const { mic, camera, analysis } = this.local;
    this.send({ type: "media", mic, camera, analysis });
  }

  async setAnalysis(enabled) {
    this.local.analysis = enabled;
    this.setAnalysisView(this.selfId, enabled);
    // The bot hears it first on the data channel (it stops at once), then everyone through signaling.
    await Promise.all([...this.bots.values()].map((link) => link.setAnalysis(enabled)));
    this.announce();
  }

  setAnalysisView(pid, analysed) {
    this.board.setAnalysed(pid, analysed);
    this.tiles.setAnalysed(pid, analysed);
  }

  // -- members and links ---------------------------------------------------------------------------

  async onMessage(msg) {
    switch (msg.type) {
      case "joined":
        return this.addMember(msg.participant);
      case "left":
        return this.removeMember(msg.participantId);
      case "media":
        return this.onMedia(msg);
      case "offer":
        return this.meshLink(msg.from, false)?.onOffer(msg.sdp);
      case "answer":
        return (this.bots.get(msg.from) ?? this.mesh.get(msg.from))?.onAnswer(msg.sdp);
      case "candidate":
        return (this.bots.get(msg.from) ?? this.mesh.get(msg.from))?.onCandidate(msg.candidate);
      case "result":
        return this.board.onResult(msg.payload);
      case "error":
        console.warn("signaling error", msg.code, msg.message);
        return undefined;
      default:
        return undefined;
    }
  }

  addMember(p) {
    const pid = p.participantId;
    this.removeMember(pid);
    const member = { ...p, analysis: p.analysis !== false };
    this.members.set(pid, member);
    this.meetingStarted();
    if (p.role === "bot") return this.connectBot(pid);
    this.tiles.ensure(pid, p.name);
    this.tiles.setMedia(pid, p.mic, p.camera);
    if (this.isHost) this.board.ensure(pid, p.name, false);
    this.board.setMedia(pid, p.mic, p.camera);
    this.setAnalysisView(pid, member.analysis);
    const link = this.meshLink(pid, offersTo(this.selfId, pid));
    if (link.offerer) return link.sendOffer();
    return undefined;
  }

  meshLink(pid, offerer) {
    if (this.bots.has(pid) || !this.members.has(pid)) return null;
    let link = this.mesh.get(pid);
    if (!link) {
      link = new MeshLink(pid, {
        stream: this.local.stream,
        offerer,
        send: this.send,
        onState: (state) => this.tiles.setConnection(pid, state),
        onStream: (stream) => this.tiles.setStream(pid, stream),
      });
      this.mesh.set(pid, link);
    }
    return link;
  }

  connectBot(botId) {
    const link = new BotLink(botId, {
      stream: this.local.stream,
      analysis: this.local.analysis,
      send: this.send,
      onState: (state) => this.renderBotState(state),
      onResult: (msg) => this.board.onResult(msg),
    });
    this.bots.set(botId, link);
    this.renderBotState("connecting");
    this.updateBotPresence();
    return link.start();
  }

  removeMember(pid) {
    const member = this.members.get(pid);
    if (!member) return;
    this.members.delete(pid);
    if (member.role === "bot") {
      this.bots.get(pid)?.close();
      this.bots.delete(pid);
      this.updateBotPresence();
      return;
    }
    this.mesh.get(pid)?.close();
    this.mesh.delete(pid);
    this.tiles.remove(pid);
    this.board.remove(pid);
  }

  onMedia(msg) {
    const member = this.members.get(msg.participantId);
    if (!member) return;
    Object.assign(member, { mic: msg.mic, camera: msg.camera, analysis: msg.analysis !== false });
    this.tiles.setMedia(member.participantId, msg.mic, msg.camera);
    this.board.setMedia(member.participantId, msg.mic, msg.camera);
    this.setAnalysisView(member.participantId, member.analysis);
  }

  updateBotPresence() {
    this.board.setBotPresent(this.bots.size > 0);
    this.inviteTools?.refresh();
    if (!this.bots.size) this.renderBotState("none");
  }

  renderBotState(state) {
    if (this.gone) return; // we left: the bot's links closing is not news
    const text = {
      none: "No bot in the meeting",
      connecting: "Connecting to the bot…",
      new: "Connecting to the bot…",
      connected: "Bot connected",
      disconnected: "Bot connection interrupted",
      failed: "Bot connection failed",
      closed: "The bot left",
    }[state];
    setConn("#conn-bot", state, text ?? `Bot: ${state}`);
  }

  // -- leaving -------------------------------------------------------------------------------------

  teardown() {
    this.gone = true;
    clearInterval(this.ticker);
    for (const link of [...this.bots.values(), ...this.mesh.values()]) link.close();
    this.bots.clear();
    this.mesh.clear();
    this.stopMedia();
  }

  stopMedia() {
    for (const track of this.local.stream.getTracks()) track.stop();
  }

  leave() {
    this.socket.onClose = () => {};
    this.socket.close();
    this.teardown();
    showProblem("left");
    show($("#rejoin"));
  }

  onClosed(err) {
    this.teardown();
    showProblem(err.code === "closed" || err.code === "connection_failed" ? "network" : err.code, err.message);
    show($("#rejoin"));
  }
}

async function main() {
  const params = new URLSearchParams(location.search);
  const fragment = new URLSearchParams(location.hash.slice(1));
  const room = params.get("room");
  const token = fragment.get("token") ?? params.get("token");
  if (!room || !token) return showProblem("incomplete");
  let invite;
  try {
    invite = await api.checkInvite(room, token);
  } catch (err) {
    return showProblem(err.code, err.message);
  }
  if (invite.role === "bot") return showProblem("bot_invite");
  const meeting = new Meeting(room, token, invite);
  window.hoovikMeeting = meeting; // for debugging from the console
  const title = invite.roomName || room;
  document.title = `${title} — Hoovik Bot`;
  $("#room-label").textContent = title;
  $("#prejoin-room").textContent = title;
  $("#prejoin-role").textContent = invite.role === "host"
    ? "You are the host: you will see everyone's emotion results. This link is for you only; invite others with the guest link."
    : "You will see your own emotion results; the host sees them too.";
  const nameInput = $("#name");
  nameInput.value = localStorage.getItem("hoovik:name") ?? "";
  show($("#prejoin"));
  $("#prejoin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("#join-btn").disabled = true;
    const name = nameInput.value.trim();
    localStorage.setItem("hoovik:name", name);
    await meeting.join(name, $("#prejoin-analysis").checked);
  });
  return undefined;
}

$("#rejoin").addEventListener("click", () => location.reload());
// A different link pasted into this tab changes only the fragment, which does not reload the page.
window.addEventListener("hashchange", () => location.reload());
main().catch((err) => showProblem("error", String(err)));
