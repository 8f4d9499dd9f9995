//! An exactly-once line sink into a directory, in the style of Flink's `FileSink`: every
//! transaction of the two-phase-commit protocol is one part file that moves from in-progress to
//! pending to committed.
//!
//! ## Design
//!
//! | stage | file name | written by |
//! |---|---|---|
//! | in-progress | `.part-<subtask>-<generation>-<seq>.inprogress` | `invoke` (created on the first record) |
//! | pending | `.part-<subtask>-<generation>-<seq>.pending` | `pre_commit`: flush, fsync, rename |
//! | committed | `part-<subtask>-<generation>-<seq>` | `commit`: atomic rename |
//!
//! Hidden names (starting with `.`) are what readers of the directory should skip: only
//! committed files are output. The *generation* is chosen when a subtask opens: one more than
//! any generation of that subtask index in the directory or in the restored transactions, so a
//! name never repeats across subtasks (the index), attempts and restarts of the job, or runs of
//! the program over the same directory (the generation), or transactions (the sequence number).
//!
//! ## Invariants
//!
//! - A committed file is never written, renamed or deleted by the sink afterwards.
//! - `commit` is idempotent: when the committed file exists and the pending one does not, the
//!   transaction is already committed. A committed file is never overwritten: finding both is a
//!   name collision and an error.
//! - An empty transaction has no file in any stage, and commits to no file.
//! - At open, hidden files that no live transaction can refer to are deleted under the subtask
//!   indices this subtask owns (see [`ExactlyOnceFileSink`]); files under indices other new
//!   subtasks own, committed files and files whose names the sink did not make are never
//!   touched.
//! - One sink (one operator) per directory: two sinks writing one directory would share names.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::api::{SinkContext, TwoPhaseCommitSink};
use crate::operator::{FunctionError, RuntimeContext};

/// The prefix of every part file name.
const PART_PREFIX: &str = "part-";
/// The suffix of in-progress part files.
const IN_PROGRESS_SUFFIX: &str = ".inprogress";
/// The suffix of pending (pre-committed) part files.
const PENDING_SUFFIX: &str = ".pending";

/// Writes elements as lines into part files in a directory, exactly once: a file becomes
/// visible only when the checkpoint covering its records completed (or the bounded job's final
/// checkpoint did). Use it with `DataStream::write_exactly_once` or
/// `DataStream::add_two_phase_sink`.
///
/// Readers of the directory must skip hidden files (names starting with `.`): they are
/// transactions in progress or waiting for their checkpoint. Committed files are named
/// `part-<subtask>-<generation>-<seq>`; a checkpoint interval with no record makes no file.
///
/// At open, subtask `i` of `p` also deletes the hidden files that no restored transaction refers
/// to under every subtask index `o` with `o mod p == i`: the leftovers of crashed attempts, of
/// its own index and, after a restore at a lower parallelism, of the old subtasks that no longer
/// exist, whether or not the restored checkpoint knew them. The runtime hands the transactions
/// of old subtask `o` to new subtask `o mod p` (see the two-phase-commit sink operator), so the
/// pre-committed transactions of every old subtask are committed by exactly one new subtask, the
/// one that owns that index; no subtask deletes files under an index another new subtask
/// writes. Committed files are never touched.
///
/// # Examples
///
/// ```
/// use eichhorn::connectors::ExactlyOnceFileSink;
/// use eichhorn::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let dir = tempfile::tempdir().unwrap();
/// let env = StreamEnv::new();
/// env.from_collection(vec![1u32, 2, 3])
///     .add_two_phase_sink(ExactlyOnceFileSink::new(dir.path(), |v: &u32| format!("n={v}")));
/// env.execute("exactly once").await.unwrap();
/// let mut lines = Vec::new();
/// for entry in std::fs::read_dir(dir.path()).unwrap() {
///     let entry = entry.unwrap();
///     assert!(!entry.file_name().to_string_lossy().starts_with('.'), "all committed");
///     lines.extend(std::fs::read_to_string(entry.path()).unwrap().lines().map(String::from));
/// }
/// lines.sort();
/// assert_eq!(lines, vec!["n=1", "n=2", "n=3"]);
/// # }
/// ```
pub struct ExactlyOnceFileSink<T> {
    dir: PathBuf,
    formatter: Arc<dyn Fn(&T) -> String + Send + Sync>,
    /// Set by `open`: where new transactions are named.
    run: Option<Run>,
    /// The file of the open transaction, once it has a record.
    writer: Option<OpenPart>,
    /// Names of the transactions recovered before `open`.
    recovered: BTreeSet<String>,
}

/// The naming state of one opened instance.
#[derive(Debug, Clone, Copy)]
struct Run {
    subtask_index: u32,
    generation: u64,
    next_seq: u64,
}

/// The in-progress file of the open transaction.
#[derive(Debug)]
struct OpenPart {
    name: String,
    path: PathBuf,
    writer: BufWriter<File>,
}

/// One transaction of an [`ExactlyOnceFileSink`]: a part file, by name, and how many lines it
/// holds. This is what checkpoints store (not the lines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartFile {
    name: String,
    records: u64,
}

impl PartFile {
    /// The committed file's name (`part-<subtask>-<generation>-<seq>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of lines written into it.
    pub fn records(&self) -> u64 {
        self.records
    }
}

/// The parts of a part file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct PartName {
    subtask: u32,
    generation: u64,
    seq: u64,
}

/// Where a part file is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    InProgress,
    Pending,
    Committed,
}

impl PartName {
    /// Parses `part-<subtask>-<generation>-<seq>` (canonical decimal numbers only).
    fn parse(name: &str) -> Option<Self> {
        let mut fields = name.strip_prefix(PART_PREFIX)?.split('-');
        let subtask = fields.next()?.parse().ok()?;
        let generation = fields.next()?.parse().ok()?;
        let seq = fields.next()?.parse().ok()?;
        let part = Self {
            subtask,
            generation,
            seq,
        };
        // Rejects extra fields, signs and leading zeros: one name, one file.
        (fields.next().is_none() && part.file_name() == name).then_some(part)
    }

    /// Which part file `file_name` is, at which stage; `None` for files the sink did not make.
    fn classify(file_name: &str) -> Option<(Self, Stage)> {
        if let Some(hidden) = file_name.strip_prefix('.') {
            if let Some(name) = hidden.strip_suffix(IN_PROGRESS_SUFFIX) {
                return Some((Self::parse(name)?, Stage::InProgress));
            }
            let name = hidden.strip_suffix(PENDING_SUFFIX)?;
            return Some((Self::parse(name)?, Stage::Pending));
        }
        Some((Self::parse(file_name)?, Stage::Committed))
    }

    fn file_name(&self) -> String {
        format!(
            "{PART_PREFIX}{}-{}-{}",
            self.subtask, self.generation, self.seq
        )
    }
}

impl<T> ExactlyOnceFileSink<T> {
    /// A sink writing `formatter(&element)` plus `\n` per element into part files in `dir`
    /// (created at open if missing).
    pub fn new(
        dir: impl Into<PathBuf>,
        formatter: impl Fn(&T) -> String + Send + Sync + 'static,
    ) -> Self {
        Self {
            dir: dir.into(),
            formatter: Arc::new(formatter),
            run: None,
            writer: None,
            recovered: BTreeSet::new(),
        }
    }

    /// The directory the part files go to.
    pub fn directory(&self) -> &Path {
        &self.dir
    }

    fn in_progress_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!(".{name}{IN_PROGRESS_SUFFIX}"))
    }

    fn pending_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!(".{name}{PENDING_SUFFIX}"))
    }

    /// The parsed name of `txn`, which may come from a restored checkpoint: anything but a part
    /// name the sink makes is rejected, so a corrupt name cannot reach outside the directory.
    fn part_name(txn: &PartFile) -> Result<PartName, FunctionError> {
        PartName::parse(&txn.name).ok_or_else(|| {
            format!(
                "exactly-once file sink: '{}' is not a part file name",
                txn.name
            )
            .into()
        })
    }

    /// The open file of `txn`, created on its first record.
    fn writer_for(&mut self, txn: &PartFile) -> Result<&mut OpenPart, FunctionError> {
        match &self.writer {
            Some(part) if part.name == txn.name => {}
            Some(part) => {
                return Err(format!(
                    "exactly-once file sink: writing transaction '{}' while '{}' is open",
                    txn.name, part.name
                )
                .into());
            }
            None if txn.records > 0 => {
                return Err(format!(
                    "exactly-once file sink: transaction '{}' was pre-committed or lost its file",
                    txn.name
                )
                .into());
            }
            None => {
                let path = self.in_progress_path(&txn.name);
                // `create_new`: an existing file would be a name collision, never overwritten.
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| format!("cannot create '{}': {e}", path.display()))?;
                self.writer = Some(OpenPart {
                    name: txn.name.clone(),
                    path,
                    writer: BufWriter::new(file),
                });
            }
        }
        // Set just above (or matched) in this function.
        self.writer
            .as_mut()
            .ok_or_else(|| "exactly-once file sink: no open file".into())
    }

    /// Deletes this subtask's leftovers and picks the generation of its part names.
    fn scan_directory(
        &mut self,
        subtask_index: u32,
        parallelism: u32,
    ) -> Result<u64, FunctionError> {
        let recovered: Vec<PartName> = self
            .recovered
            .iter()
            .filter_map(|name| PartName::parse(name))
            .collect();
        let parallelism = parallelism.max(1);
        // Whose hidden files nobody can still need. The runtime hands the transactions of old
        // subtask `o` (all named `part-o-...`) to new subtask `o mod p`, so this subtask holds
        // every restored transaction under the indices `o` with `o mod p == i`, and no other
        // new subtask writes under them: it owns their leftovers, including those of indices
        // the restored checkpoint does not know (an attempt at a higher parallelism after it).
        // A checkpoint of an earlier version hands out contiguous runs of old subtasks instead;
        // then only the indices of the restored transactions are known to be this subtask's.
        let modular = recovered
            .iter()
            .all(|p| p.subtask % parallelism == subtask_index);
        let restored_indices: BTreeSet<u32> = recovered.iter().map(|p| p.subtask).collect();
        let owned = |index: u32| {
            if modular {
                index % parallelism == subtask_index
            } else {
                restored_indices.contains(&index)
            }
        };
        let mut generation_max = recovered
            .iter()
            .filter(|p| p.subtask == subtask_index)
            .map(|p| p.generation)
            .max();
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| format!("cannot list '{}': {e}", self.dir.display()))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list '{}': {e}", self.dir.display()))?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        for file_name in names {
            let Some((part, stage)) = PartName::classify(&file_name) else {
                continue;
            };
            if part.subtask == subtask_index {
                generation_max = generation_max.max(Some(part.generation));
            }
            let stray = stage != Stage::Committed
                && owned(part.subtask)
                && !self.recovered.contains(&part.file_name());
            if stray {
                remove_if_exists(&self.dir.join(&file_name))?;
            }
        }
        Ok(generation_max.map_or(0, |g| g + 1))
    }
}

impl<T: std::fmt::Display + 'static> ExactlyOnceFileSink<T> {
    /// A sink writing each element's `Display` as a line into part files in `dir`.
    pub fn display(dir: impl Into<PathBuf>) -> Self {
        Self::new(dir, |value: &T| value.to_string())
    }
}

impl<T> Clone for ExactlyOnceFileSink<T> {
    /// A fresh, unopened sink with the same directory and formatter.
    fn clone(&self) -> Self {
        Self {
            dir: self.dir.clone(),
            formatter: self.formatter.clone(),
            run: None,
            writer: None,
            recovered: BTreeSet::new(),
        }
    }
}

impl<T> std::fmt::Debug for ExactlyOnceFileSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExactlyOnceFileSink")
            .field("dir", &self.dir)
            .field("run", &self.run)
            .field("open_file", &self.writer.as_ref().map(|w| &w.path))
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> TwoPhaseCommitSink<T> for ExactlyOnceFileSink<T> {
    type Txn = PartFile;

    fn open(&mut self, ctx: &RuntimeContext) -> Result<(), FunctionError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            format!(
                "cannot create output directory '{}': {e}",
                self.dir.display()
            )
        })?;
        let generation = self.scan_directory(ctx.subtask_index, ctx.parallelism)?;
        self.run = Some(Run {
            subtask_index: ctx.subtask_index,
            generation,
            next_seq: 0,
        });
        Ok(())
    }

    fn begin_transaction(&mut self) -> Result<PartFile, FunctionError> {
        let run = self
            .run
            .as_mut()
            .ok_or("exactly-once file sink: transaction begun before open")?;
        let name = PartName {
            subtask: run.subtask_index,
            generation: run.generation,
            seq: run.next_seq,
        };
        run.next_seq += 1;
        Ok(PartFile {
            name: name.file_name(),
            records: 0,
        })
    }

    fn invoke(
        &mut self,
        txn: &mut PartFile,
        value: T,
        _ctx: &SinkContext,
    ) -> Result<(), FunctionError> {
        let line = (self.formatter)(&value);
        let part = self.writer_for(txn)?;
        part.writer
            .write_all(line.as_bytes())
            .and_then(|()| part.writer.write_all(b"\n"))
            .map_err(|e| format!("cannot write '{}': {e}", part.path.display()))?;
        txn.records += 1;
        Ok(())
    }

    fn pre_commit(&mut self, txn: &mut PartFile) -> Result<(), FunctionError> {
        Self::part_name(txn)?;
        if txn.records == 0 {
            return Ok(());
        }
        let part = match self.writer.take() {
            Some(part) if part.name == txn.name => part,
            other => {
                self.writer = other;
                return Err(format!(
                    "exactly-once file sink: transaction '{}' ({} records) has no open file",
                    txn.name, txn.records
                )
                .into());
            }
        };
        let file = part
            .writer
            .into_inner()
            .map_err(|e| format!("cannot write '{}': {}", part.path.display(), e.error()))?;
        file.sync_all()
            .map_err(|e| format!("cannot sync '{}': {e}", part.path.display()))?;
        drop(file);
        let pending = self.pending_path(&txn.name);
        std::fs::rename(&part.path, &pending).map_err(|e| {
            format!(
                "cannot rename '{}' to '{}': {e}",
                part.path.display(),
                pending.display()
            )
        })?;
        sync_directory(&self.dir)
    }

    fn commit(&mut self, txn: PartFile) -> Result<(), FunctionError> {
        Self::part_name(&txn)?;
        if txn.records == 0 {
            return Ok(());
        }
        let pending = self.pending_path(&txn.name);
        let committed = self.dir.join(&txn.name);
        if exists(&committed)? {
            if exists(&pending)? {
                return Err(format!(
                    "cannot commit '{}': '{}' already exists (a name collision; not overwritten)",
                    pending.display(),
                    committed.display()
                )
                .into());
            }
            // Committed before (a commit repeated after a crash).
            return Ok(());
        }
        match std::fs::rename(&pending, &committed) {
            Ok(()) => sync_directory(&self.dir),
            Err(e) if e.kind() == ErrorKind::NotFound && exists(&committed)? => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(format!(
                "cannot commit '{}': neither it nor '{}' exists ({} records lost)",
                pending.display(),
                committed.display(),
                txn.records
            )
            .into()),
            Err(e) => Err(format!(
                "cannot rename '{}' to '{}': {e}",
                pending.display(),
                committed.display()
            )
            .into()),
        }
    }

    fn abort(&mut self, txn: PartFile) -> Result<(), FunctionError> {
        Self::part_name(&txn)?;
        if self.writer.as_ref().is_some_and(|w| w.name == txn.name) {
            self.writer = None;
        }
        remove_if_exists(&self.in_progress_path(&txn.name))?;
        remove_if_exists(&self.pending_path(&txn.name))
    }

    fn recover_and_commit(&mut self, txn: PartFile) -> Result<(), FunctionError> {
        Self::part_name(&txn)?;
        self.recovered.insert(txn.name.clone());
        self.commit(txn)
    }

    fn recover_and_abort(&mut self, txn: PartFile) -> Result<(), FunctionError> {
        Self::part_name(&txn)?;
        self.recovered.insert(txn.name.clone());
        self.abort(txn)
    }

    fn close(&mut self) -> Result<(), FunctionError> {
        // The runtime aborted the open transaction before; a file still open here belongs to no
        // transaction that can commit, and the next open's scan deletes it.
        self.writer = None;
        Ok(())
    }
}

/// Whether `path` exists; an error names the path.
fn exists(path: &Path) -> Result<bool, FunctionError> {
    path.try_exists()
        .map_err(|e| format!("cannot access '{}': {e}", path.display()).into())
}

/// Deletes `path`; a file already gone is fine.
fn remove_if_exists(path: &Path) -> Result<(), FunctionError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("cannot delete '{}': {e}", path.display()).into()),
    }
}

/// Makes renames in `dir` durable (a no-op where directories cannot be synced).
fn sync_directory(dir: &Path) -> Result<(), FunctionError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("cannot sync directory '{}': {e}", dir.display()))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

crate::api::operator::impl_plain_operator!(ExactlyOnceFileSink<T>; T);

#[cfg(test)]
mod tests {
    use super::*;

    fn context(subtask_index: u32, attempt_number: u32) -> RuntimeContext {
        RuntimeContext {
            job_name: "test".into(),
            job_id: crate::checkpoint::JobId(7),
            operator_name: "exactly once".into(),
            uid: None,
            subtask_index,
            parallelism: 2,
            max_parallelism: 128,
            attempt_number,
            metrics: crate::metrics::MetricGroup::detached(),
        }
    }

    fn sink_ctx() -> SinkContext {
        SinkContext {
            timestamp: None,
            subtask_index: 0,
            current_watermark: i64::MIN,
        }
    }

    fn opened(dir: &Path, subtask_index: u32) -> ExactlyOnceFileSink<u32> {
        let mut sink = ExactlyOnceFileSink::display(dir);
        sink.open(&context(subtask_index, 0)).expect("open");
        sink
    }

    fn write(sink: &mut ExactlyOnceFileSink<u32>, txn: &mut PartFile, values: &[u32]) {
        for v in values {
            sink.invoke(txn, *v, &sink_ctx()).expect("invoke");
        }
    }

    /// The file names in `dir`, sorted.
    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn hidden(dir: &Path) -> Vec<String> {
        listing(dir)
            .into_iter()
            .filter(|n| n.starts_with('.'))
            .collect()
    }

    fn read(dir: &Path, name: &str) -> String {
        std::fs::read_to_string(dir.join(name)).unwrap()
    }

    #[test]
    fn a_transaction_moves_from_in_progress_to_pending_to_committed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut sink = ExactlyOnceFileSink::new(&out, |v: &u32| format!("<{v}>"));
        sink.open(&context(1, 0))
            .expect("open creates the directory");
        let mut txn = sink.begin_transaction().unwrap();
        assert_eq!(txn.name(), "part-1-0-0");
        assert!(listing(&out).is_empty(), "no file before the first record");
        write(&mut sink, &mut txn, &[1, 2]);
        assert_eq!(txn.records(), 2);
        assert_eq!(listing(&out), vec![".part-1-0-0.inprogress"]);
        sink.pre_commit(&mut txn).unwrap();
        assert_eq!(listing(&out), vec![".part-1-0-0.pending"]);
        sink.commit(txn).unwrap();
        assert_eq!(listing(&out), vec!["part-1-0-0"]);
        assert_eq!(read(&out, "part-1-0-0"), "<1>\n<2>\n");
        assert_eq!(sink.begin_transaction().unwrap().name(), "part-1-0-1");
    }

    #[test]
    fn commit_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = opened(dir.path(), 0);
        let mut txn = sink.begin_transaction().unwrap();
        write(&mut sink, &mut txn, &[7]);
        sink.pre_commit(&mut txn).unwrap();
        sink.commit(txn.clone()).unwrap();
        sink.commit(txn.clone())
            .expect("a repeated commit is done already");
        // And from another instance, as after a crash.
        let mut other = ExactlyOnceFileSink::<u32>::display(dir.path());
        other.recover_and_commit(txn).unwrap();
        assert_eq!(listing(dir.path()), vec!["part-0-0-0"]);
        assert_eq!(read(dir.path(), "part-0-0-0"), "7\n");
    }

    #[test]
    fn a_crash_after_pre_commit_is_committed_by_the_restore() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = opened(dir.path(), 0);
        let mut first = sink.begin_transaction().unwrap();
        write(&mut sink, &mut first, &[1, 2, 3]);
        sink.pre_commit(&mut first).unwrap();
        let mut second = sink.begin_transaction().unwrap();
        write(&mut sink, &mut second, &[4]);
        // What the checkpoint stored: `first` pending, `second` open. Then the process dies.
        let (pending, open) = (first.clone(), second.clone());
        drop(sink);
        assert_eq!(
            hidden(dir.path()),
            vec![".part-0-0-0.pending", ".part-0-0-1.inprogress"]
        );

        let mut restored = ExactlyOnceFileSink::<u32>::display(dir.path());
        restored.recover_and_commit(pending).unwrap();
        restored.recover_and_abort(open).unwrap();
        restored.open(&context(0, 1)).unwrap();
        assert_eq!(listing(dir.path()), vec!["part-0-0-0"]);
        assert_eq!(read(dir.path(), "part-0-0-0"), "1\n2\n3\n");
        let next = restored.begin_transaction().unwrap();
        assert_eq!(next.name(), "part-0-1-0", "a new generation");
    }

    #[test]
    fn abort_leaves_no_hidden_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = opened(dir.path(), 0);
        let mut in_progress = sink.begin_transaction().unwrap();
        write(&mut sink, &mut in_progress, &[1]);
        sink.abort(in_progress).unwrap();
        let mut pending = sink.begin_transaction().unwrap();
        write(&mut sink, &mut pending, &[2]);
        sink.pre_commit(&mut pending).unwrap();
        sink.abort(pending.clone()).unwrap();
        sink.abort(pending).expect("aborting twice is fine");
        let empty = sink.begin_transaction().unwrap();
        sink.abort(empty).unwrap();
        assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
    }

    #[test]
    fn an_empty_transaction_commits_to_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = opened(dir.path(), 0);
        let mut txn = sink.begin_transaction().unwrap();
        sink.pre_commit(&mut txn).unwrap();
        sink.commit(txn).unwrap();
        assert!(listing(dir.path()).is_empty());
    }

    #[test]
    fn stray_files_of_crashed_attempts_are_deleted_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let keep = [
            "part-0-0-0",          // committed: never touched
            ".part-1-0-3.pending", // another subtask's
            ".part-1-0-4.inprogress",
            ".keep", // not the sink's
            "notes.txt",
            ".part-0-x-1.pending", // not a name the sink makes
        ];
        for name in keep {
            std::fs::write(dir.path().join(name), "x").unwrap();
        }
        // Restored from a checkpoint holding part-0-1-0 as pending.
        std::fs::write(dir.path().join(".part-0-1-0.pending"), "restored\n").unwrap();
        // Leftovers of attempts after that checkpoint.
        for stray in [
            ".part-0-1-1.inprogress",
            ".part-0-2-0.pending",
            ".part-0-2-1.inprogress",
        ] {
            std::fs::write(dir.path().join(stray), "stray\n").unwrap();
        }
        let mut sink = ExactlyOnceFileSink::<u32>::display(dir.path());
        sink.recover_and_commit(PartFile {
            name: "part-0-1-0".into(),
            records: 1,
        })
        .unwrap();
        sink.recover_and_abort(PartFile {
            name: "part-0-1-1".into(),
            records: 0,
        })
        .unwrap();
        sink.open(&context(0, 2)).unwrap();
        let mut expected: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
        expected.push("part-0-1-0".into());
        expected.sort();
        assert_eq!(listing(dir.path()), expected);
        assert_eq!(read(dir.path(), "part-0-1-0"), "restored\n");
        assert_eq!(
            sink.begin_transaction().unwrap().name(),
            "part-0-3-0",
            "above every generation seen, strays included"
        );

        // Restarted without a checkpoint: the subtask's own leftovers go.
        std::fs::write(dir.path().join(".part-0-3-0.inprogress"), "stray\n").unwrap();
        let _restarted = opened(dir.path(), 0);
        assert_eq!(listing(dir.path()), expected);
    }

    #[test]
    fn after_a_rescale_only_the_restored_subtasks_leftovers_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        // A checkpoint of an earlier version hands out contiguous runs of old subtasks: new
        // subtask 1 of 2 restored old subtask 2's transactions, and old subtask 1's pending file
        // belongs to a transaction new subtask 0 restores.
        for name in [
            ".part-1-0-5.pending",
            ".part-2-0-6.inprogress",
            ".part-2-0-7.pending",
        ] {
            std::fs::write(dir.path().join(name), "x\n").unwrap();
        }
        let mut sink = ExactlyOnceFileSink::<u32>::display(dir.path());
        sink.recover_and_abort(PartFile {
            name: "part-2-0-5".into(),
            records: 0,
        })
        .unwrap();
        sink.open(&context(1, 0)).unwrap();
        assert_eq!(listing(dir.path()), vec![".part-1-0-5.pending"]);
        assert_eq!(sink.begin_transaction().unwrap().name(), "part-1-1-0");
    }

    #[test]
    fn a_scale_down_cleans_up_after_every_old_subtask_without_touching_new_files() {
        let dir = tempfile::tempdir().unwrap();
        // Three old subtasks crashed after the checkpoint that holds part-<j>-0-7 pending and
        // part-<j>-0-8 open; each left an in-progress file of a later transaction.
        for j in 0..3 {
            std::fs::write(
                dir.path().join(format!(".part-{j}-0-7.pending")),
                "ok
",
            )
            .unwrap();
            std::fs::write(
                dir.path().join(format!(".part-{j}-0-8.inprogress")),
                "x
",
            )
            .unwrap();
            std::fs::write(
                dir.path().join(format!(".part-{j}-0-9.inprogress")),
                "x
",
            )
            .unwrap();
        }
        let recover = |sink: &mut ExactlyOnceFileSink<u32>, j: u32| {
            sink.recover_and_commit(PartFile {
                name: format!("part-{j}-0-7"),
                records: 1,
            })
            .unwrap();
            sink.recover_and_abort(PartFile {
                name: format!("part-{j}-0-8"),
                records: 1,
            })
            .unwrap();
        };
        // At parallelism 2, new subtask 1 gets old subtask 1 and is the first to write.
        let mut one = ExactlyOnceFileSink::<u32>::display(dir.path());
        recover(&mut one, 1);
        one.open(&context(1, 0)).unwrap();
        let mut txn = one.begin_transaction().unwrap();
        write(&mut one, &mut txn, &[5]);
        assert_eq!(txn.name(), "part-1-1-0");
        // New subtask 0 gets old subtasks 0 and 2, and opens later.
        let mut zero = ExactlyOnceFileSink::<u32>::display(dir.path());
        recover(&mut zero, 0);
        recover(&mut zero, 2);
        zero.open(&context(0, 0)).unwrap();
        assert_eq!(
            listing(dir.path()),
            vec![
                ".part-1-1-0.inprogress",
                "part-0-0-7",
                "part-1-0-7",
                "part-2-0-7"
            ],
            "every old subtask committed and cleaned, the new file kept"
        );
    }

    #[test]
    fn leftovers_of_indices_the_checkpoint_never_knew_are_deleted_by_their_owner() {
        let dir = tempfile::tempdir().unwrap();
        // A checkpoint at parallelism 1 (part-0-0-*), then an attempt at parallelism 5 that
        // crashed before any checkpoint; now the job is back at parallelism 2 from that
        // checkpoint.
        let leftovers = [
            ".part-0-1-0.inprogress",
            ".part-1-1-0.inprogress",
            ".part-2-1-0.pending",
            ".part-3-1-0.inprogress",
            ".part-4-1-1.pending",
        ];
        for name in leftovers {
            std::fs::write(
                dir.path().join(name),
                "x
",
            )
            .unwrap();
        }
        let mut zero = ExactlyOnceFileSink::<u32>::display(dir.path());
        zero.recover_and_abort(PartFile {
            name: "part-0-0-3".into(),
            records: 0,
        })
        .unwrap();
        zero.open(&context(0, 0)).unwrap();
        assert_eq!(
            hidden(dir.path()),
            vec![".part-1-1-0.inprogress", ".part-3-1-0.inprogress"],
            "subtask 0 of 2 owns the even indices"
        );
        let mut one = ExactlyOnceFileSink::<u32>::display(dir.path());
        one.open(&context(1, 0)).unwrap();
        assert!(hidden(dir.path()).is_empty(), "subtask 1 the odd ones");
        assert_eq!(one.begin_transaction().unwrap().name(), "part-1-2-0");
    }

    #[test]
    fn names_never_collide_across_subtasks_attempts_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut committed = Vec::new();
        let mut restored: Option<PartFile> = None;
        for attempt in 0..4 {
            for subtask in 0..2 {
                let mut sink = ExactlyOnceFileSink::<u32>::display(dir.path());
                // Odd attempts restore (and abort) the open transaction of the one before.
                if attempt % 2 == 1
                    && subtask == 0
                    && let Some(open) = restored.take()
                {
                    sink.recover_and_abort(open).unwrap();
                }
                sink.open(&context(subtask, attempt % 2)).unwrap();
                for _ in 0..2 {
                    let mut txn = sink.begin_transaction().unwrap();
                    write(&mut sink, &mut txn, &[attempt]);
                    sink.pre_commit(&mut txn).unwrap();
                    committed.push(txn.name().to_string());
                    sink.commit(txn).unwrap();
                }
                if subtask == 0 {
                    restored = Some(sink.begin_transaction().unwrap());
                }
            }
        }
        let unique: BTreeSet<&String> = committed.iter().collect();
        assert_eq!(unique.len(), committed.len(), "{committed:?}");
        assert_eq!(listing(dir.path()).len(), 16);
        assert!(hidden(dir.path()).is_empty());
    }

    #[test]
    fn io_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_dir = dir.path().join("file");
        std::fs::write(&not_a_dir, "x").unwrap();
        let mut sink = ExactlyOnceFileSink::<u32>::display(&not_a_dir);
        let error = sink.open(&context(0, 0)).unwrap_err().to_string();
        assert!(error.contains(&not_a_dir.display().to_string()), "{error}");

        let mut sink = opened(dir.path(), 0);
        let mut txn = sink.begin_transaction().unwrap();
        write(&mut sink, &mut txn, &[1]);
        sink.pre_commit(&mut txn).unwrap();
        std::fs::remove_file(dir.path().join(".part-0-0-0.pending")).unwrap();
        let error = sink.commit(txn).unwrap_err().to_string();
        assert!(
            error.contains(".part-0-0-0.pending") && error.contains("lost"),
            "{error}"
        );

        let corrupt = PartFile {
            name: "../escape".into(),
            records: 1,
        };
        let error = sink.commit(corrupt).unwrap_err().to_string();
        assert!(error.contains("not a part file name"), "{error}");
    }

    #[test]
    fn part_names_parse_only_as_made() {
        let part = PartName {
            subtask: 3,
            generation: 1,
            seq: 12,
        };
        assert_eq!(PartName::parse("part-3-1-12"), Some(part));
        for bad in [
            "part-3-1",
            "part-3-1-12-0",
            "part-03-1-12",
            "part-+3-1-12",
            "part-3-1-x",
        ] {
            assert_eq!(PartName::parse(bad), None, "{bad}");
        }
        assert_eq!(
            PartName::classify(".part-3-1-12.pending"),
            Some((part, Stage::Pending))
        );
        assert_eq!(
            PartName::classify(".part-3-1-12.inprogress"),
            Some((part, Stage::InProgress))
        );
        assert_eq!(
            PartName::classify("part-3-1-12"),
            Some((part, Stage::Committed))
        );
        assert_eq!(PartName::classify(".part-3-1-12"), None);
    }
}
