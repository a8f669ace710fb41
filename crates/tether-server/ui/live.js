// A task's live events over SSE, exactly once across reconnects.
//
// Each frame carries `id: <offset>`. The feed resumes strictly after the last id it received
// (the `after` parameter, which the server treats as it treats `Last-Event-ID`), so nothing is
// replayed and nothing is skipped; the page also drops any offset it already shows. The
// browser's own retry is not used: it would resend the first URL, whose `after` wins over
// the `Last-Event-ID` header it adds. After a drop the feed waits (with a growing pause) until
// the server answers again, then reconnects. It ends after the task's terminal event.

export const TERMINAL_TYPES = new Set(['task_completed', 'task_failed', 'task_timed_out', 'task_cancelled']);
const MAX_PAUSE_MS = 2000;

export class LiveFeed {
  // `probe` is a request that succeeds when the server is back (and sends the browser to the
  // login page on a 401, which an EventSource cannot see).
  constructor({ taskId, after, onEvent, onState, probe }) {
    this.base = `/v1/tasks/${encodeURIComponent(taskId)}/events?live=sse`;
    this.after = after;
    this.onEvent = onEvent;
    this.onState = onState;
    this.probe = probe;
    this.failures = 0;
    this.ended = false;
    this.es = null;
  }

  start() {
    this.onState('reconnecting');
    this.connect();
  }

  connect() {
    const url = this.after ? `${this.base}&after=${encodeURIComponent(this.after)}` : this.base;
    const es = new EventSource(url);
    this.es = es;
    es.onopen = () => {
      this.failures = 0;
      this.onState('live');
    };
    es.onmessage = (message) => {
      let ev;
      try {
        ev = JSON.parse(message.data);
      } catch {
        return;
      }
      ev.offset ??= message.lastEventId;
      if (message.lastEventId) this.after = message.lastEventId;
      this.onEvent(ev);
      if (TERMINAL_TYPES.has(ev.type)) this.end();
    };
    // A dropped connection, the server's own close after a minute, or an `event: error`
    // frame: all resume from the last offset received.
    es.onerror = () => {
      if (this.ended || this.es !== es) return;
      es.close();
      this.onState('reconnecting');
      this.retry();
    };
  }

  async retry() {
    while (!this.ended) {
      const pause = Math.min(MAX_PAUSE_MS, 100 * 2 ** this.failures);
      this.failures += 1;
      await new Promise((resolve) => setTimeout(resolve, pause));
      if (this.ended) return;
      try {
        await this.probe();
      } catch (error) {
        if (error && error.status === 404) {
          this.end();
          return;
        }
        continue;
      }
      this.connect();
      return;
    }
  }

  end() {
    this.ended = true;
    if (this.es) this.es.close();
    this.onState('ended');
  }
}
