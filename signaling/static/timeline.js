// The last 60 s of one person's results as a strip: one bar per result, its height the confidence,
// its colour the label. Drawn on a canvas so hundreds of results cost nothing in the DOM.

export const WINDOW_MS = 60_000;

export const LABEL_COLOURS = {
  angry: "#d9534f",
  fearful: "#8e6bbf",
  disgust: "#6b8e23",
  happy: "#f0ad4e",
  sad: "#5b8def",
  "neutral/calm": "#9aa5b1",
};

export function drawTimeline(canvas, history, now) {
  const ctx = canvas.getContext("2d");
  const { width, height } = canvas;
  ctx.clearRect(0, 0, width, height);
  ctx.fillStyle = "#f3f5f8";
  ctx.fillRect(0, 0, width, height);
  ctx.strokeStyle = "#d5dbe3";
  for (let s = 10; s < 60; s += 10) {
    const x = Math.round(width - (s * 1000 * width) / WINDOW_MS) + 0.5;
    ctx.beginPath();
    ctx.moveTo(x, 0);
    ctx.lineTo(x, height);
    ctx.stroke();
  }
  const barWidth = Math.max(2, width / 200);
  for (const item of history) {
    const age = now - item.t;
    if (age > WINDOW_MS || age < 0) continue;
    const x = width - (age * width) / WINDOW_MS - barWidth;
    const h = Math.max(2, item.confidence * (height - 2));
    ctx.fillStyle = LABEL_COLOURS[item.label] ?? "#555";
    ctx.globalAlpha = item.anomaly ? 0.45 : 1;
    ctx.fillRect(x, height - h, barWidth, h);
  }
  ctx.globalAlpha = 1;
}
