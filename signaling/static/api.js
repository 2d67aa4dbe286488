// REST calls of the signaling server (docs/signaling.md, docs/web.md), and the links the pages hand out.
// Every failure becomes an ApiError with the server's error code, so pages can explain it.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call(method, path, { token, body } = {}) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, "network", "The server cannot be reached. Check your connection and try again.");
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const err = new ApiError(resp.status, data?.error ?? `http_${resp.status}`, data?.message ?? resp.statusText);
    err.body = data;
    throw err;
  }
  return data;
}

const roomPath = (room) => `/rooms/${encodeURIComponent(room)}`;

export const createRoom = (name) => call("POST", "/rooms", { body: { name } });
export const mintInvite = (room, hostToken, role, ttlSeconds = 86400) =>
  call("POST", `${roomPath(room)}/invites`, { token: hostToken, body: { role, ttlSeconds } });
export const checkInvite = (room, token) => call("POST", "/api/invite", { body: { room, token } });
export const webConfig = () => call("GET", "/api/web");
export const launchBot = (room, hostToken) => call("POST", `${roomPath(room)}/bot`, { token: hostToken });
export const botStatus = (room, hostToken) => call("GET", `${roomPath(room)}/bot`, { token: hostToken });
export const stopBot = (room, hostToken) => call("DELETE", `${roomPath(room)}/bot`, { token: hostToken });

/** The meeting page for `room`; the token rides in the fragment, which browsers never send to servers.
 *  A host link also says so in its visible part (`&for=host-only`), so nobody mistakes it for a
 *  guest link; the token alone decides the role. */
export function meetingLink(room, token, { host = false } = {}) {
  const url = new URL("/meet", location.origin);
  url.searchParams.set("room", room);
  if (host) url.searchParams.set("for", "host-only");
  url.hash = `token=${encodeURIComponent(token)}`;
  return url.href;
}

export function signalingUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}

export function botCommand(room, token) {
  // The token goes in the environment: on the command line every user of the machine sees it in `ps`.
  return `HOOVIK_BOT_TOKEN=${token} hoovik-bot join --signaling ${signalingUrl()} --room ${room}`;
}
