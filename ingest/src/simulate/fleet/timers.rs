//! The calendar queue of the fleet's timers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{Action, MINUTE};
use crate::simulate::Due;
/// An actor's next step.
pub(super) type Timer = Due<i64, Action>;

/// A calendar queue of timers, popped in (time, sequence) order.
///
/// A binary heap of every pending timer (hundreds of thousands for a large
/// fleet) misses the cache on each pop. Here only the current minute's timers
/// are in a heap; later ones wait in one bucket per minute over a horizon of
/// a few days, and the rare timers beyond that in an overflow heap.
pub(super) struct TimerQueue {
    current: BinaryHeap<Reverse<Timer>>,
    /// Start of the minute `current` holds.
    slot_start: i64,
    slots: Vec<Vec<Reverse<Timer>>>,
    in_slots: usize,
    beyond: BinaryHeap<Reverse<Timer>>,
}

const SLOT_MS: i64 = MINUTE;
const N_SLOTS: usize = 4096;

impl TimerQueue {
    pub(super) fn new(start: i64) -> Self {
        TimerQueue {
            current: BinaryHeap::new(),
            slot_start: start.div_euclid(SLOT_MS) * SLOT_MS,
            slots: (0..N_SLOTS).map(|_| Vec::new()).collect(),
            in_slots: 0,
            beyond: BinaryHeap::new(),
        }
    }

    fn slot_of(at: i64) -> usize {
        at.div_euclid(SLOT_MS).rem_euclid(N_SLOTS as i64) as usize
    }

    pub(super) fn push(&mut self, timer: Timer) {
        if timer.at < self.slot_start + SLOT_MS {
            self.current.push(Reverse(timer));
        } else if timer.at < self.slot_start + SLOT_MS * N_SLOTS as i64 {
            self.slots[Self::slot_of(timer.at)].push(Reverse(timer));
            self.in_slots += 1;
        } else {
            self.beyond.push(Reverse(timer));
        }
    }

    pub(super) fn pop(&mut self) -> Option<Timer> {
        loop {
            if let Some(Reverse(timer)) = self.current.pop() {
                return Some(timer);
            }
            if self.in_slots == 0 {
                // Nothing within the horizon: jump to the next overflow timer.
                let Reverse(next) = self.beyond.peek()?;
                self.slot_start = self.slot_start.max(next.at.div_euclid(SLOT_MS) * SLOT_MS - SLOT_MS);
            }
            self.slot_start += SLOT_MS;
            let mut batch = std::mem::take(&mut self.slots[Self::slot_of(self.slot_start)]);
            self.in_slots -= batch.len();
            while let Some(Reverse(next)) = self.beyond.peek()
                && next.at < self.slot_start + SLOT_MS
            {
                batch.extend(self.beyond.pop());
            }
            let mut spent = std::mem::replace(&mut self.current, BinaryHeap::from(batch)).into_vec();
            spent.clear();
            self.slots[Self::slot_of(self.slot_start)] = spent;
        }
    }
}
