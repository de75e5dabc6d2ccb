//! Async tasks in the goroutine profile, from tokio's task dumps (feature
//! `tokio-taskdump`, built with `RUSTFLAGS="--cfg tokio_unstable"`).
//!
//! `Handle::dump` pauses the runtime's workers and re-polls every task in a
//! tracing mode that records where each one is suspended. It never finishes
//! while a worker is blocked, so it runs under a timeout; when that passes,
//! the profile says so and holds the threads alone.

#[cfg(all(feature = "tokio-taskdump", not(tokio_unstable)))]
compile_error!(
    "pprof-core's `tokio-taskdump` feature needs tokio's unstable API: build with RUSTFLAGS=\"--cfg tokio_unstable\""
);

use std::time::Duration;

#[cfg(all(feature = "tokio-taskdump", tokio_unstable))]
use crate::format::Label;
use crate::format::Sample;

/// The samples for the tasks of the runtime the request runs on: one per
/// suspended leaf future of each task (value 1), labelled `task` and
/// `task_id`. Empty without the feature.
pub(crate) async fn samples(timeout: Duration) -> Vec<Sample> {
    #[cfg(all(feature = "tokio-taskdump", tokio_unstable))]
    {
        dump(timeout).await
    }
    #[cfg(not(all(feature = "tokio-taskdump", tokio_unstable)))]
    {
        let _ = timeout;
        Vec::new()
    }
}

/// Whether this build includes tokio tasks in the goroutine profile.
pub(crate) const ENABLED: bool = cfg!(all(feature = "tokio-taskdump", tokio_unstable));

/// The number of live tasks of the current runtime (the index page's count).
pub(crate) fn count() -> usize {
    if !ENABLED {
        return 0;
    }
    tokio::runtime::Handle::try_current().map_or(0, |h| h.metrics().num_alive_tasks())
}

#[cfg(all(feature = "tokio-taskdump", tokio_unstable))]
async fn dump(timeout: Duration) -> Vec<Sample> {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return Vec::new();
    };
    let Ok(dump) = tokio::time::timeout(timeout, handle.dump()).await else {
        return vec![Sample {
            pcs: Vec::new(),
            values: vec![1],
            labels: vec![
                Label::Str("task", "tokio".to_owned()),
                Label::Str(
                    "stack",
                    format!(
                        "unavailable: the runtime's task dump took over {timeout:?} (a worker is blocked)"
                    ),
                ),
            ],
        }];
    };
    // Resolving reads debug info: off the async workers.
    let resolved = tokio::task::spawn_blocking(move || {
        dump.tasks()
            .iter()
            .map(|task| {
                let id = task.id().to_string().parse::<i64>().unwrap_or_default();
                let labels = crate::labels::tasks::of(task.id());
                let stacks: Vec<Vec<u64>> = task
                    .trace()
                    .resolve_backtraces()
                    .iter()
                    .map(|bt| {
                        bt.frames()
                            .map(|f| (f.ip() as u64).saturating_sub(1))
                            .filter(|pc| *pc != 0)
                            .collect()
                    })
                    .collect();
                (id, labels, stacks)
            })
            .collect::<Vec<_>>()
    })
    .await;
    let traces = resolved.unwrap_or_default();
    traces
        .into_iter()
        .flat_map(|(id, labels, stacks)| {
            stacks.into_iter().map(move |pcs| {
                let mut all = vec![
                    Label::Str("task", "tokio".to_owned()),
                    Label::Str("state", "suspended".to_owned()),
                ];
                all.extend(labels.to_sample_labels());
                all.push(Label::Num("task_id", id));
                Sample {
                    pcs,
                    values: vec![1],
                    labels: all,
                }
            })
        })
        .collect()
}
