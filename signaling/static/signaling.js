// The browser side of the native signaling protocol (docs/signaling.md): one WebSocket, "join" first,
// then JSON messages both ways. The server's close reason is its error code; we keep it.

export class SignalingError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

export class SignalingSocket {
  constructor(url, { onMessage, onClose }) {
    this.url = url;
    this.onMessage = onMessage;
    this.onClose = onClose;
    this.ws = null;
    this.lastError = null;
  }

  /** Open, send `join`, resolve with the `welcome`; reject with a SignalingError if refused. */
  join(join) {
    return new Promise((resolve, reject) => {
      let welcomed = false;
      const ws = new WebSocket(this.url);
      this.ws = ws;
      ws.addEventListener("open", () => ws.send(JSON.stringify({ type: "join", ...join })));
      ws.addEventListener("message", (event) => {
        let msg;
        try {
          msg = JSON.parse(event.data);
        } catch {
          return;
        }
        if (msg.type === "error") this.lastError = msg;
        if (!welcomed) {
          if (msg.type === "welcome") {
            welcomed = true;
            resolve(msg);
          }
          return;
        }
        this.onMessage(msg);
      });
      ws.addEventListener("close", (event) => {
        const code = event.reason || this.lastError?.code || (welcomed ? "closed" : "connection_failed");
        const message = this.lastError?.message ?? "";
        if (!welcomed) reject(new SignalingError(code, message));
        else this.onClose(new SignalingError(code, message));
      });
    });
  }

  send(msg) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg));
  }

  close() {
    this.send({ type: "leave" });
    this.ws?.close(1000);
  }
}
