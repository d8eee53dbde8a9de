//! Reloads the config when its file changes.
//!
//! The folder is watched, not the file: editors often save by writing a new
//! file and renaming it over the old one, which a watch on the file itself
//! would lose. Events are gathered for a short quiet time, and the file is
//! reloaded only when its bytes changed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher as _};
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
    let (watcher, mut rx) = changes(&path)?;
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

/// A watch on the folder of `path`, and a channel that gets a message each
/// time something may have changed the file.
fn changes(path: &Path) -> notify::Result<(notify::RecommendedWatcher, mpsc::UnboundedReceiver<()>)> {
    let (tx, rx) = mpsc::unbounded_channel::<()>();
    let name = path.file_name().map(|n| n.to_owned());
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && may_change(&event.kind)
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
    Ok((watcher, rx))
}

/// Whether an event may have changed the file. Opening, reading and
/// closing it unwritten do not; and since the watcher itself reads the file
/// after every event, counting those would make each read set off the next.
fn may_change(kind: &EventKind) -> bool {
    !matches!(
        kind,
        EventKind::Access(
            AccessKind::Open(_)
                | AccessKind::Read
                | AccessKind::Close(AccessMode::Read | AccessMode::Execute)
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_or_reading_the_file_is_no_change() {
        assert!(!may_change(&EventKind::Access(AccessKind::Open(AccessMode::Any))));
        assert!(!may_change(&EventKind::Access(AccessKind::Read)));
        assert!(!may_change(&EventKind::Access(AccessKind::Close(AccessMode::Read))));
        assert!(may_change(&EventKind::Access(AccessKind::Close(AccessMode::Write))));
        assert!(may_change(&EventKind::Modify(notify::event::ModifyKind::Any)));
        assert!(may_change(&EventKind::Create(notify::event::CreateKind::File)));
        assert!(may_change(&EventKind::Remove(notify::event::RemoveKind::File)));
        assert!(may_change(&EventKind::Any));
    }

    /// The watcher reads the file after every event: a read that counted
    /// as an event would set off the next read, forever.
    #[tokio::test]
    async fn reading_the_file_sends_nothing_but_writing_it_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rtbd.toml");
        std::fs::write(&path, "a").unwrap();
        let (_watcher, mut rx) = changes(&path).unwrap();
        for _ in 0..3 {
            assert_eq!(read(&path).as_deref(), Some(&b"a"[..]));
        }
        // The absence of an event can only be waited for; inotify delivers
        // within microseconds, so a quarter second is ample.
        let heard = tokio::time::timeout(Duration::from_millis(250), rx.recv()).await;
        assert!(heard.is_err(), "reading the file was taken for a change");
        std::fs::write(&path, "b").unwrap();
        let heard = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await;
        assert_eq!(heard, Ok(Some(())), "writing the file was missed");
    }
}
