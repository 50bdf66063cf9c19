//! Microsecond-precise wake-ups for tasks on a current-thread runtime.
//!
//! Tokio's timer has millisecond resolution: a load generator that measures latency
//! from each request's scheduled send time would charge up to a millisecond of its own
//! timer slack to the server. A [`Pacer`] keeps the due times of waiting tasks in a heap
//! and arms one Linux `timerfd` (a high-resolution timer the runtime's epoll watches)
//! at the earliest of them, so the thread sleeps until exactly then instead of spinning.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Wakes tasks at precise instants. Single-threaded: share it with `Rc`, run
/// [`Pacer::drive`] as a local task, and await [`Pacer::sleep_until`] from others.
#[derive(Debug)]
pub struct Pacer {
    due: RefCell<BinaryHeap<Reverse<Due>>>,
    /// The instant the timer is armed for, if any.
    armed: Cell<Option<Instant>>,
    /// Signalled when a due time earlier than the armed one is added.
    rearm: Notify,
    timer: TimerFd,
}

#[derive(Debug)]
struct Due {
    at: Instant,
    waker: Waker,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

impl Pacer {
    /// Must be called inside a tokio runtime (the timer registers with its reactor).
    pub fn new() -> io::Result<Pacer> {
        Ok(Pacer {
            due: RefCell::new(BinaryHeap::new()),
            armed: Cell::new(None),
            rearm: Notify::new(),
            timer: TimerFd::new()?,
        })
    }

    /// Completes at `at` (immediately if it has passed), provided [`Pacer::drive`] runs.
    pub fn sleep_until(&self, at: Instant) -> PacedSleep<'_> {
        PacedSleep { pacer: self, at }
    }

    /// Wakes sleepers when they are due; runs until the task is dropped.
    pub async fn drive(&self) -> io::Result<()> {
        loop {
            let now = Instant::now();
            let next = {
                let mut due = self.due.borrow_mut();
                while due.peek().is_some_and(|Reverse(d)| d.at <= now) {
                    let Reverse(d) = due.pop().expect("peeked above");
                    d.waker.wake();
                }
                due.peek().map(|Reverse(d)| d.at)
            };
            self.armed.set(next);
            match next {
                None => self.rearm.notified().await,
                Some(at) => {
                    self.timer.arm(at)?;
                    tokio::select! {
                        fired = self.timer.wait() => fired?,
                        _ = self.rearm.notified() => {}
                    }
                }
            }
        }
    }
}

/// The future returned by [`Pacer::sleep_until`].
#[derive(Debug)]
pub struct PacedSleep<'p> {
    pacer: &'p Pacer,
    at: Instant,
}

impl Future for PacedSleep<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        // A spurious poll registers a second entry; the extra wake-up is harmless.
        self.pacer.due.borrow_mut().push(Reverse(Due {
            at: self.at,
            waker: cx.waker().clone(),
        }));
        if self.pacer.armed.get().is_none_or(|armed| self.at < armed) {
            self.pacer.rearm.notify_one();
        }
        Poll::Pending
    }
}

/// A non-blocking `CLOCK_MONOTONIC` timerfd registered with the runtime.
#[derive(Debug)]
struct TimerFd {
    fd: AsyncFd<OwnedFd>,
    /// `CLOCK_MONOTONIC` reading taken together with `origin`, to turn an `Instant`
    /// into an absolute timer expiry (std's `Instant` is `CLOCK_MONOTONIC` on Linux but
    /// does not expose its value).
    origin_ns: u128,
    origin: Instant,
}

impl TimerFd {
    fn new() -> io::Result<TimerFd> {
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let owned = unsafe { OwnedFd::from_raw_fd(raw) };
        let origin = Instant::now();
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid, writable timespec.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the `OwnedFd` moves into the `AsyncFd`, which neither closes nor
        // replaces it while registered.
        let fd = unsafe { AsyncFd::register(owned)? };
        Ok(TimerFd {
            fd,
            origin_ns: now.tv_sec as u128 * 1_000_000_000 + now.tv_nsec as u128,
            origin,
        })
    }

    /// Arms the timer to expire once at `at` (already past: at once).
    fn arm(&self, at: Instant) -> io::Result<()> {
        let offset = at.saturating_duration_since(self.origin);
        // Zero would disarm the timer; one nanosecond past the origin has passed anyway.
        let expiry_ns = self.origin_ns + offset.as_nanos().max(1);
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (expiry_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (expiry_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: valid descriptor and itimerspec; the old value is not requested.
        let rc = unsafe {
            libc::timerfd_settime(
                self.fd.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until the armed timer has expired.
    async fn wait(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            let read = guard.try_io(|fd| {
                let mut expirations = 0u64;
                // SAFETY: reads 8 bytes into a u64 owned by this frame.
                let n = unsafe {
                    libc::read(
                        fd.as_raw_fd(),
                        (&mut expirations as *mut u64).cast(),
                        std::mem::size_of::<u64>(),
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(())
                }
            });
            match read {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn wakes_sleepers_in_order_and_close_to_their_due_time() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            let pacer = Rc::new(Pacer::new().unwrap());
            let driver = tokio::task::spawn_local({
                let pacer = pacer.clone();
                async move { pacer.drive().await }
            });
            let start = Instant::now();
            let order = Rc::new(RefCell::new(Vec::new()));
            let sleepers: Vec<_> = [3u64, 1, 2]
                .into_iter()
                .map(|ms| {
                    let pacer = pacer.clone();
                    let order = order.clone();
                    tokio::task::spawn_local(async move {
                        let due = start + Duration::from_millis(ms);
                        pacer.sleep_until(due).await;
                        order
                            .borrow_mut()
                            .push((ms, Instant::now().saturating_duration_since(due)));
                    })
                })
                .collect();
            for sleeper in sleepers {
                sleeper.await.unwrap();
            }
            driver.abort();
            let order = order.borrow();
            assert_eq!(
                order.iter().map(|(ms, _)| *ms).collect::<Vec<_>>(),
                [1, 2, 3]
            );
            // Generous bound for a loaded CI machine; tokio's timer alone would be
            // late by up to a millisecond on every sleep.
            for (ms, late) in order.iter() {
                assert!(
                    *late < Duration::from_millis(50),
                    "{ms} ms sleeper {late:?} late"
                );
            }
        });
    }
}
