// Video tiles: yours (muted, mirrored) and one per person in the mesh, with their media state,
// connection state and a "not analysed" badge for people who opted out.

import { el } from "./dom.js";

class Tile {
  constructor(pid, name, isSelf) {
    this.video = el("video", { autoplay: true, playsInline: true, muted: isSelf });
    this.name = el("span.name", { text: name || pid });
    this.mic = el("span.mic", { text: "mic off" });
    this.camera = el("span.cam", { text: "camera off" });
    this.conn = el("span.conn-state", { text: isSelf ? "" : "connecting" });
    this.notAnalysed = el("span.not-analysed", { text: "not analysed", hidden: true });
    this.el = el("figure.tile", { dataset: { pid, self: String(isSelf), conn: isSelf ? "self" : "new" } }, [
      this.video,
      el("figcaption", {}, [this.name, this.mic, this.camera, this.notAnalysed, this.conn]),
    ]);
    if (isSelf) this.el.classList.add("self");
  }

  setStream(stream) {
    if (this.video.srcObject !== stream) {
      this.video.srcObject = stream;
      this.video.play().catch(() => {});
    }
  }

  setMedia(mic, camera) {
    this.mic.hidden = mic;
    this.camera.hidden = camera;
    this.el.classList.toggle("camera-off", !camera);
  }
}

export class Tiles {
  constructor(root) {
    this.root = root;
    this.tiles = new Map();
  }

  ensure(pid, name, isSelf = false) {
    let tile = this.tiles.get(pid);
    if (!tile) {
      tile = new Tile(pid, name, isSelf);
      this.tiles.set(pid, tile);
      if (isSelf) this.root.prepend(tile.el);
      else this.root.append(tile.el);
    }
    return tile;
  }

  setStream(pid, stream) {
    this.tiles.get(pid)?.setStream(stream);
  }

  setMedia(pid, mic, camera) {
    this.tiles.get(pid)?.setMedia(mic, camera);
  }

  setAnalysed(pid, analysed) {
    const tile = this.tiles.get(pid);
    if (tile) tile.notAnalysed.hidden = analysed;
  }

  setConnection(pid, state) {
    const tile = this.tiles.get(pid);
    if (!tile) return;
    tile.el.dataset.conn = state;
    tile.conn.textContent = state === "connected" ? "" : state;
  }

  remove(pid) {
    this.tiles.get(pid)?.el.remove();
    this.tiles.delete(pid);
  }
}
