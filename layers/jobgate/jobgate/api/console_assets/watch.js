// Following a job: its numbered events (log, progress, status) over the WebSocket API, as the Python
// client does (subscribe with after_seq, a snapshot first, each event once in seq order); without a
// WebSocket, or when it fails, the same events by the HTTP long poll GET /v1/jobs/{id}/events.

import { api, ApiError, apiKey, TERMINAL } from "./api.js";

const POLL_WAIT_S = 20;
const RETRY_MS = 2000;

export function follow(job, { onEvent, onTransport, onEnd, onFail }) {
  let lastSeq = 0;
  let stopped = false;
  let socket = null;
  let polling = false;

  function stop() {
    stopped = true;
    if (socket) socket.close();
  }

  function handle(event) {
    if (typeof event.seq === "number") {
      if (event.seq <= lastSeq) return; // a replay of one already shown
      lastSeq = event.seq;
    }
    onEvent(event);
    if (event.type === "status" && TERMINAL.has(event.status)) {
      stop();
      onEnd();
    }
  }

  async function poll() {
    if (polling || stopped) return;
    polling = true;
    onTransport("long poll");
    while (!stopped) {
      try {
        const page = await api(
          `/v1/jobs/${encodeURIComponent(job.job_id)}/events?after_seq=${lastSeq}&wait_s=${POLL_WAIT_S}`,
        );
        for (const event of page.events) handle(event);
        if (typeof page.next_after_seq === "number") lastSeq = Math.max(lastSeq, page.next_after_seq);
        if (page.done && !stopped) {
          stopped = true;
          onEnd();
        }
      } catch (error) {
        // A refusal (the key, the job gone) is final; a throttle, a 5xx or the network is retried.
        if (error instanceof ApiError && error.status >= 400 && error.status < 500 && error.status !== 429) {
          stopped = true;
          onFail(error);
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      }
    }
  }

  const url = job.links && job.links.websocket;
  if (!url || typeof WebSocket === "undefined") {
    poll();
    return { stop };
  }
  const separator = url.includes("?") ? "&" : "?";
  socket = new WebSocket(`${url}${separator}api_key=${encodeURIComponent(apiKey() || "")}`);
  socket.addEventListener("open", () => {
    onTransport("WebSocket");
    socket.send(JSON.stringify({ action: "subscribe", job_id: job.job_id, after_seq: lastSeq }));
  });
  socket.addEventListener("message", (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return;
    }
    if (event.type === "snapshot") {
      // The job as it is now; its events from after_seq follow, so its seq is not the last one seen.
      onEvent(event);
    } else if (event.type === "error") {
      socket.close(); // the long poll answers the same question, with the API's own error if any
    } else if (event.job_id === job.job_id) {
      handle(event);
    }
  });
  // A socket that never opens or drops before the end: the long poll goes on from the last seq seen.
  socket.addEventListener("close", () => {
    socket = null;
    if (!stopped) poll();
  });
  return { stop };
}
