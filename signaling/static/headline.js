// What a panel's headline says about one result (docs/results.md, docs/web.md "The panel").
//
// The headline is the label the result carries (`result.emotion`): smoothed over recent results,
// and `neutral/calm` when the bot was too uncertain (its smoothed best score under the confidence
// threshold, 0.45 by default). The bars are the raw scores of the latest moment. The two can
// differ; when they do, the panel says why, so that they never disagree without an explanation.

export const NEUTRAL = "neutral/calm";
export const LOW_CONFIDENCE = 0.45;

const pct = (x) => `${Math.round((x ?? 0) * 100)}%`;

/** The label with the highest score in `probs`, or null. */
export function topLabel(probs) {
  let best = null;
  for (const [label, p] of Object.entries(probs ?? {})) if (best === null || p > probs[best]) best = label;
  return best;
}

/** { label, colourKey, confidence, reason, fallback, top } for the panel. `msg.fallback`, which
 *  the bot sends, says whether the neutral label is its fallback (the bundle's own threshold);
 *  without it (an older bot), the documented rule (neutral below 0.45) decides. */
export function resultView(msg) {
  const result = msg.result ?? {};
  const top = topLabel(result.probs);
  if (msg.error) {
    return { label: "no prediction", colourKey: null, confidence: "", reason: `The bot could not predict: ${msg.error}`, fallback: true, top };
  }
  const label = result.emotion ?? "—";
  const confidence = result.confidence ?? 0;
  const fallback = typeof msg.fallback === "boolean" ? msg.fallback : label === NEUTRAL && confidence < LOW_CONFIDENCE;
  if (fallback) {
    const lead = top && top !== NEUTRAL ? ` ${top} scores highest right now (${pct(result.probs[top])}).` : "";
    return {
      label,
      colourKey: label,
      confidence: "",
      reason: `too uncertain: showing neutral. No emotion reached ${pct(LOW_CONFIDENCE)} over the last results (best ${pct(confidence)}).${lead}`,
      fallback: true,
      top,
    };
  }
  const reason = top && top !== label
    ? `Smoothed over the last results; right now ${top} scores highest (${pct(result.probs[top])}).`
    : "";
  return { label, colourKey: label, confidence: pct(confidence), reason, fallback: false, top };
}
