//! Reloads the config when its file changes.
//!
//! The folder is watched, not the file: editors often save by writing a new
//! file and renaming it over the old one, which a watch on the file itself
//! would lose. Events are gathered for a short quiet time, and the file is
//! reloaded only when its bytes changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

use crate::engine::Engine;

/// How long events are gathered before a reload.
const QUIET: Duration = Duration::from_millis(100);

/// Watches `path` and reloads `engine` when it changes, until `stop`
/// completes.
pub fn spawn(
    engine: Arc<Engine>,
    path: PathBuf,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> notify::Result<tokio::task::JoinHandle<()>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let name = path.file_name().map(|n| n.to_owned());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && event.paths.iter().any(|p| p.file_name() == name.as_deref())
        {
            let _ = tx.send(());
        }
    })?;
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    watcher.watch(&folder, RecursiveMode::NonRecursive)?;
    // What the running config was read from: only a change of it reloads.
    let mut last = read(&path);
    Ok(tokio::spawn(async move {
        // The watcher lives as long as this task.
        let _watcher = watcher;
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                event = rx.recv() => {
                    if event.is_none() {
                        return;
                    }
                    tokio::time::sleep(QUIET).await;
                    while rx.try_recv().is_ok() {}
                    let now = read(&path);
                    if now.is_some() && now != last {
                        last = now;
                        let engine = engine.clone();
                        let _ = tokio::task::spawn_blocking(move || engine.reload()).await;
                    }
                }
                () = &mut stop => return,
            }
        }
    }))
}

fn read(path: &Path) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}
