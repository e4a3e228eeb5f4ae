//! The program's standard output and error, written so that a reader that goes away never
//! makes it panic.
//!
//! Rust ignores SIGPIPE, so a write to a pipe whose reader has closed (`valuecard terminal
//! info | head -2`) fails with `BrokenPipe`, and std's `println!` panics on that. Resetting
//! SIGPIPE would need unsafe code (forbidden here), and would let a write to any other closed
//! pipe or socket end the process without a word (the PC/SC client library's Unix socket to
//! pcscd, for one) where today it is an error the command reports. Instead this module
//! defines `println!`, `print!`, `eprintln!` and `eprint!` for the whole crate: `main.rs`
//! declares it first with `#[macro_use]`, and a macro in textual scope takes precedence over
//! the standard prelude's macro of the same name, so every module writes through the
//! functions below unchanged.
//!
//! When standard output is closed the program stops at once, quietly, with exit status 141
//! (128 + SIGPIPE, what a shell reports for a program that SIGPIPE stopped): whatever the
//! command committed before stays committed; the rest of its output has no reader. Any other
//! failure to write standard output is reported on standard error with exit status 2, like
//! every other CLI error. A failure to write standard error is ignored: there is nowhere
//! left to report it.

use std::fmt::Arguments;
use std::io::{ErrorKind, Write};

/// The exit status after the reader of standard output went away.
pub const BROKEN_PIPE_EXIT: i32 = 141;

/// Writes `args` (and a newline when `newline`) to standard output, or ends the program as
/// the module documentation says.
pub fn stdout(args: Arguments<'_>, newline: bool) {
    let mut out = std::io::stdout().lock();
    let written = out.write_fmt(args).and_then(|()| {
        if newline {
            out.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    if let Err(error) = written {
        drop(out);
        stdout_failed(&error);
    }
}

fn stdout_failed(error: &std::io::Error) -> ! {
    if error.kind() == ErrorKind::BrokenPipe {
        std::process::exit(BROKEN_PIPE_EXIT);
    }
    stderr(
        format_args!("valuecard: cannot write standard output: {error}"),
        true,
    );
    std::process::exit(2);
}

/// Writes to standard error, ignoring failure.
pub fn stderr(args: Arguments<'_>, newline: bool) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| {
        if newline {
            err.write_all(b"\n")
        } else {
            Ok(())
        }
    });
}

macro_rules! println {
    () => {
        $crate::output::stdout(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::output::stdout(format_args!($($arg)*), true)
    };
}

// Not used today; defined so that a `print!` added later cannot bypass this module.
#[allow(unused_macros)]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::output::stdout(format_args!($($arg)*), false)
    };
}

macro_rules! eprintln {
    () => {
        $crate::output::stderr(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::output::stderr(format_args!($($arg)*), true)
    };
}

#[allow(unused_macros)]
macro_rules! eprint {
    ($($arg:tt)*) => {
        $crate::output::stderr(format_args!($($arg)*), false)
    };
}
