//! `goroutine` and `threadcreate`, built from a dump of every thread's
//! stack ([`signals`](crate::signals)), and for `goroutine` the tokio tasks
//! where the build has task dumps ([`tasks`](super::tasks)).
//!
//! Rust has no goroutines: a thread is the unit that exists, waits and
//! leaks, so each thread is one "goroutine" here.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use super::{
    About, Admission, Ask, Cancel, Collecting, Profile, Seconds, Working, blocking, tasks,
};
use crate::error::Error;
use crate::format::{self, Label, LeafTrim, Sample, StackProfile, ValueType, vt};
use crate::labels::Labels;
use crate::signals::{self, ThreadStack};
use crate::symbols::symbolizer;

/// Which of the two thread profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// Every thread (and task) where it is now.
    Goroutine,
    /// Every thread, cut to the frames that started it.
    Threadcreate,
}

/// One of the two profiles built from a thread dump.
pub(crate) struct Threads {
    about: About,
    form: Form,
}

/// `/goroutine`: every OS thread's stack (and tokio's tasks with `tokio-taskdump`).
pub(crate) static GOROUTINE: Threads = Threads {
    about: About {
        name: "goroutine",
        description: "Stack traces of all current goroutines (here: every OS thread). Use debug=2 as a query parameter to export in the same format as an unrecovered panic.",
        index_links: &[("goroutine?debug=2", "full goroutine stack dump")],
        sample_types: &[vt("goroutine", "count")],
        period_type: vt("goroutine", "count"),
        seconds: Seconds::Delta,
    },
    form: Form::Goroutine,
};

/// `/threadcreate`: where each live thread was started.
pub(crate) static THREADCREATE: Threads = Threads {
    about: About {
        name: "threadcreate",
        description: "Stack traces that led to the creation of new OS threads",
        index_links: &[],
        sample_types: &[vt("threadcreate", "count")],
        period_type: vt("threadcreate", "count"),
        seconds: Seconds::Delta,
    },
    form: Form::Threadcreate,
};

impl Profile for Threads {
    fn about(&self) -> &About {
        &self.about
    }

    /// A dump interrupts every thread: concurrent requests share one.
    fn admission(&self) -> Admission {
        Admission::Coalesced
    }

    /// `debug=2` keeps one sample per thread; otherwise threads with the
    /// same stack and labels are grouped, as Go groups goroutines.
    fn collect(&'static self, ask: Ask, working: Working) -> Collecting {
        Box::pin(async move {
            let tasks = match self.form {
                Form::Goroutine => tasks::samples(ask.task_dump_timeout).await,
                Form::Threadcreate => Vec::new(),
            };
            blocking(move || {
                let _working = working;
                ask.cancel.check()?;
                let (signal, timeout) = (ask.thread_signal, ask.thread_timeout);
                let mut profile = match self.form {
                    Form::Goroutine => goroutine(self.about.sample_types, signal, timeout)?,
                    Form::Threadcreate => {
                        threadcreate(self.about.sample_types, signal, timeout, &ask.cancel)?
                    }
                };
                profile.samples.extend(tasks);
                Ok(if self.form == Form::Goroutine && ask.debug >= 2 {
                    profile
                } else {
                    grouped(profile)
                })
            })
            .await
        })
    }

    fn text(&self, profile: &StackProfile, debug: u32, out: &mut dyn fmt::Write) -> fmt::Result {
        if self.form == Form::Goroutine && debug >= 2 {
            format::thread_dump(out, profile)
        } else {
            format::counts(out, self.about.name, profile)
        }
    }

    fn count(&self) -> usize {
        let threads = signals::thread_count();
        match self.form {
            Form::Goroutine => threads + tasks::count(),
            Form::Threadcreate => threads,
        }
    }
}

/// One sample per thread (value 1), labelled with its name, state and id.
/// The leaf frames of waiting (the libc call, std's sleep and lock
/// internals) are trimmed when encoding, so the top function is the code
/// that waits; `debug=2` shows the whole stack.
fn goroutine(
    types: &'static [ValueType],
    signal: i32,
    timeout: Duration,
) -> Result<StackProfile, Error> {
    let stacks = signals::dump_threads(signal, timeout)?;
    let samples = stacks
        .into_iter()
        .map(|t| Sample {
            values: vec![1],
            labels: labels(&t),
            pcs: t.pcs.unwrap_or_default(),
        })
        .collect();
    Ok(profile(types, samples, LeafTrim::Wait))
}

/// One sample per live thread, its stack cut to the frames that started
/// it: the thread's outermost frames up to the first one that is not
/// thread-start machinery, which is the closure given to `spawn` (named
/// after the function that created the thread), or a C thread's start routine.
fn threadcreate(
    types: &'static [ValueType],
    signal: i32,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<StackProfile, Error> {
    let stacks = signals::dump_threads(signal, timeout)?;
    cancel.check()?;
    let resolved =
        symbolizer().resolve_all(stacks.iter().flat_map(|t| t.pcs.iter().flatten().copied()));
    let samples = stacks
        .into_iter()
        .map(|t| {
            let mut pcs = t.pcs.clone().unwrap_or_default();
            // Outermost first: find the first frame that is the thread's own code.
            let start = pcs.iter().rposition(|pc| {
                resolved
                    .get(pc)
                    .is_some_and(|frames| frames.iter().any(|f| !format::is_thread_start(f)))
            });
            if let Some(start) = start {
                pcs.drain(..start);
            }
            Sample {
                values: vec![1],
                labels: labels(&t),
                pcs,
            }
        })
        .collect();
    Ok(profile(types, samples, LeafTrim::None))
}

fn profile(types: &'static [ValueType], samples: Vec<Sample>, trim: LeafTrim) -> StackProfile {
    StackProfile {
        sample_types: types,
        period_type: types[0],
        period: 1,
        default_sample_type: None,
        time: SystemTime::now(),
        duration: Duration::ZERO,
        samples,
        leaf_trim: trim,
        comments: Vec::new(),
    }
}

fn labels(t: &ThreadStack) -> Vec<Label> {
    let mut labels = vec![
        Label::Str("thread", t.name.clone()),
        Label::Str("state", t.state.to_owned()),
    ];
    if let Some(wait) = &t.wait_channel {
        labels.push(Label::Str("wchan", wait.clone()));
    }
    if t.pcs.is_none() {
        labels.push(Label::Str(
            "stack",
            "unavailable: the thread did not answer the signal".to_owned(),
        ));
    } else if let Some(why) = t.partial {
        labels.push(Label::Str("stack", why.to_owned()));
    }
    labels.extend(Labels::from_set(t.labels.clone()).to_sample_labels());
    labels.push(Label::Num("thread_id", i64::from(t.tid)));
    labels
}

/// Threads with the same stack and string labels folded into one sample
/// whose value is their number (Go's goroutine profile groups the same way).
/// Numeric labels (the thread id) and the wait channel are dropped.
fn grouped(mut profile: StackProfile) -> StackProfile {
    let mut index: HashMap<(Vec<u64>, Vec<Label>), usize> = HashMap::new();
    let mut samples: Vec<Sample> = Vec::new();
    for s in profile.samples {
        let labels: Vec<Label> = s
            .labels
            .into_iter()
            .filter(|l| l.is_string() && !matches!(l, Label::Str("wchan", _)))
            .collect();
        let key = (s.pcs, labels);
        match index.get(&key) {
            Some(&i) => {
                for (acc, v) in samples[i].values.iter_mut().zip(&s.values) {
                    *acc += v;
                }
            }
            None => {
                index.insert(key.clone(), samples.len());
                samples.push(Sample {
                    pcs: key.0,
                    values: s.values,
                    labels: key.1,
                });
            }
        }
    }
    profile.samples = samples;
    profile
}

#[cfg(all(test, feature = "tokio-taskdump", tokio_unstable))]
mod task_dump_tests {
    use super::*;
    use crate::profiles::Ask;

    #[inline(never)]
    async fn suspended_in_known_async_fn(rx: tokio::sync::oneshot::Receiver<()>) {
        let _ = rx.await;
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// The `goroutine?debug=2` block of the task suspended in
    /// [`suspended_in_known_async_fn`], once it had time to get there.
    async fn suspended_task_block() -> String {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let ask = Ask::new(&crate::config::Config::default(), 2, Default::default(), 0);
        let profile = GOROUTINE.collect(ask, None).await.expect("dump");
        let mut text = String::new();
        GOROUTINE.text(&profile, 2, &mut text).expect("text");
        text.split("\n\n")
            .find(|b| b.contains("suspended_in_known_async_fn"))
            .unwrap_or_else(|| panic!("no task block: {text}"))
            .to_owned()
    }

    #[test]
    fn tasks_appear_with_their_suspended_stacks() {
        runtime().block_on(async {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(crate::labels::scope(
                [("job", "dumped")],
                suspended_in_known_async_fn(rx),
            ));
            let block = suspended_task_block().await;
            assert!(block.starts_with("task "), "{block}");
            assert!(
                block.contains(r#"[suspended] labels: {"job":"dumped"}:"#),
                "the task's labels: {block}"
            );
            let _ = tx.send(());
            task.await.expect("task");
        });
    }

    #[test]
    fn tasks_keep_their_labels_after_a_nested_labeled_future_ends() {
        runtime().block_on(async {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(crate::labels::scope([("job", "outer")], async move {
                // A labeled step that ends before the task suspends.
                crate::labels::scope([("step", "inner")], async {}).await;
                suspended_in_known_async_fn(rx).await;
            }));
            let block = suspended_task_block().await;
            assert!(
                block.contains(r#"[suspended] labels: {"job":"outer"}:"#),
                "the outer future's labels, after the inner one ended: {block}"
            );
            let _ = tx.send(());
            task.await.expect("task");
        });
    }
}
