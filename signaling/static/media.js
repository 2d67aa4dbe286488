// Camera and microphone: ask for both, and when the person refuses one, keep what they allowed.

function describe(device, err) {
  switch (err?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return `Permission to use your ${device} was denied. You are in the meeting without it; to add it, allow the ${device} in your browser's site settings and rejoin.`;
    case "NotFoundError":
    case "OverconstrainedError":
      return `No ${device} was found. You are in the meeting without it.`;
    case "NotReadableError":
      return `Your ${device} is busy (another program may be using it). You are in the meeting without it.`;
    default:
      return `Your ${device} could not be started (${err?.name ?? "error"}). You are in the meeting without it.`;
  }
}

async function tryGet(constraints) {
  try {
    return { stream: await navigator.mediaDevices.getUserMedia(constraints), error: null };
  } catch (error) {
    return { stream: null, error };
  }
}

/** { stream, problems: [{device, text}] } — the stream holds whatever tracks were allowed. */
export async function acquireMedia() {
  if (!navigator.mediaDevices?.getUserMedia) {
    const text = "This page cannot use cameras or microphones here (it needs https:// or localhost). You are in the meeting without them.";
    return { stream: new MediaStream(), problems: [{ device: "both", text }] };
  }
  const both = await tryGet({ audio: true, video: true });
  if (both.stream) return { stream: both.stream, problems: [] };
  // One refusal fails the combined request: ask for each device alone and keep what works.
  const [audio, video] = [await tryGet({ audio: true }), await tryGet({ video: true })];
  const stream = new MediaStream([...(audio.stream?.getTracks() ?? []), ...(video.stream?.getTracks() ?? [])]);
  const problems = [];
  if (audio.error) problems.push({ device: "microphone", text: describe("microphone", audio.error) });
  if (video.error) problems.push({ device: "camera", text: describe("camera", video.error) });
  if (!audio.stream && !video.stream) {
    problems.push({ device: "both", text: "Others cannot see or hear you, and the bot has nothing of yours to analyse." });
  }
  return { stream, problems };
}
