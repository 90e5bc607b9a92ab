//! Standard output for kiln's commands. `println!` panics when the reader has gone away
//! (`kiln runs | head -1`); [`outln!`] and [`out!`] end the process quietly instead, with the
//! status a shell reports for a command stopped by SIGPIPE, as C tools behave.

use std::io::{self, Write};

/// 128 + SIGPIPE (13): what a shell reports for a writer whose reader went away.
pub(crate) const EXIT_BROKEN_PIPE: i32 = 141;

/// Writes `args` to standard output and flushes. A reader that has gone away ends the process
/// with [`EXIT_BROKEN_PIPE`] and no message; any other failure (a full disk behind a
/// redirection) with a message and status 1. The process ends where it stands, as under
/// SIGPIPE: the commands print their results after writing their files, and a run's lock is an
/// OS lock that goes with the process.
pub(crate) fn write(args: std::fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(EXIT_BROKEN_PIPE);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `print!` through [`write`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}

/// `println!` through [`write`].
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};
