//! The long-lived tasks of a service, each of which the service cannot do without.
//!
//! A panic in a task spawned with `tokio::spawn` ends that task only: the process lives on,
//! healthy to systemd and to a TCP probe, with its ingest or a cluster's collection gone. A task
//! spawned by [`CriticalTasks::spawn`] is watched instead: when it panics, the failure is logged
//! with the task's name, the service's shutdown token is cancelled so every other task stops,
//! and [`CriticalTasks::wait`] returns the failure. The binaries return it from `main`, so the
//! process exits with status 1 and its supervisor (systemd `Restart=on-failure`, Kubernetes)
//! starts it again with a clean state.
//!
//! Debug builds only: the environment variable [`PANIC_TASK_ENV`] names a task that panics as
//! soon as it starts, so the tests can check the above on the real binaries. Release builds do
//! not read it.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use futures_util::FutureExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Debug builds: the name of the task to make panic at its start (see the module documentation).
pub const PANIC_TASK_ENV: &str = "PROXBALANCE_DEBUG_PANIC_TASK";

/// A task ended by a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task {task} panicked: {message}; the service stopped so that it can be restarted")]
pub struct TaskFailure {
    /// The name the task was spawned with.
    pub task: String,
    /// The panic's message.
    pub message: String,
}

/// The watched tasks of one service (see the module documentation).
#[derive(Debug, Clone)]
pub struct CriticalTasks {
    tracker: TaskTracker,
    shutdown: CancellationToken,
    failure: Arc<Mutex<Option<TaskFailure>>>,
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_owned()
    }
}

impl CriticalTasks {
    /// Tasks that cancel `shutdown` when one of them panics.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            tracker: TaskTracker::new(),
            shutdown,
            failure: Arc::default(),
        }
    }

    /// Spawns `task` under `name` (used in the log line and the error).
    pub fn spawn<F>(&self, name: &str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let name = name.to_owned();
        let shutdown = self.shutdown.clone();
        let failure = self.failure.clone();
        let inject = injected_panic(&name);
        self.tracker.spawn(async move {
            let run = async {
                if inject {
                    panic!("{PANIC_TASK_ENV} asked task {name} to panic");
                }
                task.await;
            };
            if let Err(panic) = AssertUnwindSafe(run).catch_unwind().await {
                let message = panic_message(panic.as_ref());
                tracing::error!(task = %name, %message, "task panicked; stopping the service");
                let mut first = failure.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert(TaskFailure {
                    task: name,
                    message,
                });
                drop(first);
                shutdown.cancel();
            }
        });
    }

    /// No more tasks will be spawned (call before [`CriticalTasks::wait`]).
    pub fn close(&self) {
        self.tracker.close();
    }

    /// Waits until every task has ended; the first panic, if any.
    pub async fn wait(&self) -> Result<(), TaskFailure> {
        self.tracker.wait().await;
        match self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(f) => Err(f),
            None => Ok(()),
        }
    }
}

#[cfg(debug_assertions)]
fn injected_panic(name: &str) -> bool {
    std::env::var(PANIC_TASK_ENV).is_ok_and(|v| v == name)
}

#[cfg(not(debug_assertions))]
fn injected_panic(_name: &str) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_cancels_the_others_and_is_reported() {
        let shutdown = CancellationToken::new();
        let tasks = CriticalTasks::new(shutdown.clone());
        let stop = shutdown.clone();
        tasks.spawn("steady", async move { stop.cancelled().await });
        tasks.spawn("faulty", async { panic!("boom") });
        tasks.close();
        assert_eq!(
            tasks.wait().await,
            Err(TaskFailure {
                task: "faulty".into(),
                message: "boom".into()
            })
        );
        assert!(shutdown.is_cancelled());
    }

    #[tokio::test]
    async fn tasks_that_end_normally_report_nothing() {
        let shutdown = CancellationToken::new();
        let tasks = CriticalTasks::new(shutdown.clone());
        tasks.spawn("short", async {});
        tasks.close();
        assert_eq!(tasks.wait().await, Ok(()));
        assert!(!shutdown.is_cancelled());
    }
}
