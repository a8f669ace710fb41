// The rewind rule, as tether-core's `rewind.rs` states it (DESIGN.md, "Steps, attempts and
// rewind"): an event E is superseded when a later `stream_rewind` R has R.step == E.step and
// E.attempt < R.new_epoch. Events without a step are never superseded, nor are rewinds; an
// event with a step but no attempt counts as the step's first attempt. The server's timeline
// view applies the same rule, and the browser tests check that the two agree.

// Offsets are fixed-width strings (`0000000000000000_0000000000000042`): they order as strings.

export function asRewind(ev) {
  if (ev.type !== 'stream_rewind' || typeof ev.step !== 'string') return null;
  const epoch = ev.data && ev.data.new_epoch;
  if (!Number.isInteger(epoch) || epoch < 0) return null;
  return { offset: ev.offset, step: ev.step, epoch };
}

export function supersedes(rewind, ev) {
  if (ev.type === 'stream_rewind' || typeof ev.step !== 'string') return false;
  const attempt = Number.isInteger(ev.attempt) ? ev.attempt : 1;
  return ev.step === rewind.step && attempt < rewind.epoch && ev.offset < rewind.offset;
}
