// Peer connections. The bot is answer-only (it cannot roll back an offer), so we always offer to it,
// with a data channel its results come back on. Browsers connect to each other as a mesh; in each
// pair the lexically smaller participantId offers, so two peers never offer at once (no glare).

const RTC_CONFIG = { iceServers: [] };
const MAX_PENDING_CANDIDATES = 64;

export const offersTo = (selfId, peerId) => selfId < peerId;

class Link {
  constructor(peerId, send, onState) {
    this.peerId = peerId;
    this.send = send;
    this.onState = onState;
    this.pending = [];
    this.pc = new RTCPeerConnection(RTC_CONFIG);
    this.pc.addEventListener("icecandidate", (event) => {
      send({ type: "candidate", to: peerId, candidate: event.candidate ? event.candidate.toJSON() : null });
    });
    this.pc.addEventListener("connectionstatechange", () => onState(this.pc.connectionState));
  }

  async sendOffer() {
    await this.pc.setLocalDescription();
    this.send({ type: "offer", to: this.peerId, sdp: this.pc.localDescription.sdp });
  }

  async onAnswer(sdp) {
    await this.pc.setRemoteDescription({ type: "answer", sdp });
    await this.flush();
  }

  async onCandidate(candidate) {
    if (!this.pc.remoteDescription) {
      if (this.pending.length < MAX_PENDING_CANDIDATES) this.pending.push(candidate);
      return;
    }
    await this.pc.addIceCandidate(candidate ?? undefined).catch(() => {});
  }

  async flush() {
    const queued = this.pending.splice(0);
    for (const candidate of queued) await this.onCandidate(candidate);
  }

  close() {
    this.pc.close();
    this.onState("closed");
  }
}

/** Our connection to the bot: our tracks go out (unless we opted out), results come back. */
export class BotLink extends Link {
  constructor(botId, { stream, analysis, send, onState, onResult }) {
    super(botId, send, onState);
    this.stream = stream;
    this.analysis = analysis;
    this.channel = this.pc.createDataChannel("results");
    this.channel.addEventListener("open", () => this.sendAnalysis());
    this.channel.addEventListener("message", (event) => {
      try {
        onResult(JSON.parse(event.data));
      } catch {
        // not a result: ignore
      }
    });
    // An opted-out person's camera and microphone are not sent to the bot at all.
    this.senders = stream.getTracks().map((track) => {
      const transceiver = this.pc.addTransceiver(analysis ? track : track.kind, { direction: "sendonly", streams: [stream] });
      return { sender: transceiver.sender, track };
    });
  }

  start() {
    return this.sendOffer();
  }

  sendAnalysis() {
    if (this.channel.readyState === "open") this.channel.send(JSON.stringify({ type: "analysis", enabled: this.analysis }));
  }

  /** Opt out: tell the bot first (it drops media and deletes what it buffered), then stop sending. */
  async setAnalysis(enabled) {
    this.analysis = enabled;
    this.sendAnalysis();
    await Promise.all(this.senders.map(({ sender, track }) => sender.replaceTrack(enabled ? track : null)));
  }
}

/** A connection to another person: our tracks both ways, their stream shown in a tile. */
export class MeshLink extends Link {
  constructor(peerId, { stream, offerer, send, onState, onStream }) {
    super(peerId, send, onState);
    this.offerer = offerer;
    for (const track of stream.getTracks()) this.pc.addTrack(track, stream);
    if (offerer) {
      // Receive what we cannot send: the answerer's own tracks attach to these m-lines.
      for (const kind of ["audio", "video"]) {
        if (!stream.getTracks().some((t) => t.kind === kind)) this.pc.addTransceiver(kind, { direction: "recvonly" });
      }
    }
    this.pc.addEventListener("track", (event) => onStream(event.streams[0] ?? new MediaStream([event.track])));
  }

  async onOffer(sdp) {
    await this.pc.setRemoteDescription({ type: "offer", sdp });
    await this.flush();
    await this.pc.setLocalDescription();
    this.send({ type: "answer", to: this.peerId, sdp: this.pc.localDescription.sdp });
  }
}
