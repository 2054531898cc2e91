//! Errors as values: a kind that decides the process exit code (sysexits.h) and a message that
//! names the cause and, where there is one, the fix.

use std::fmt;

/// sysexits.h codes smimed uses.
pub mod exit {
    pub const OK: i32 = 0;
    pub const USAGE: i32 = 64;
    pub const DATAERR: i32 = 65;
    pub const NOINPUT: i32 = 66;
    pub const UNAVAILABLE: i32 = 69;
    pub const SOFTWARE: i32 = 70;
    pub const CANTCREAT: i32 = 73;
    pub const IOERR: i32 = 74;
    pub const TEMPFAIL: i32 = 75;
    pub const NOPERM: i32 = 77;
    pub const CONFIG: i32 = 78;
}

/// What kind of failure, which is what a caller (procmail, Sieve, a mail client) acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Wrong command line.
    Usage,
    /// The configuration, a key or a trust file is wrong: will not pass by itself.
    Config,
    /// May pass later (passphrase command failed, I/O error): the caller keeps the original.
    TempFail,
    /// Input data unusable for the asked operation.
    Data,
    /// An input file named on the command line does not exist or cannot be read.
    NoInput,
    /// Permission refused by a peer (wrong password).
    NoPerm,
    /// A required service is unavailable.
    Unavailable,
    /// A bug or an unexpected state.
    Software,
    /// An output file named on the command line cannot be created (a folder we may not write).
    CantCreate,
}

impl Kind {
    /// The kind whose exit code is `code` (an exit code reported by `smimed agent`); codes no
    /// kind produces are software errors.
    pub fn from_exit_code(code: i32) -> Kind {
        match code {
            exit::USAGE => Kind::Usage,
            exit::CONFIG => Kind::Config,
            exit::TEMPFAIL => Kind::TempFail,
            exit::DATAERR => Kind::Data,
            exit::NOINPUT => Kind::NoInput,
            exit::NOPERM => Kind::NoPerm,
            exit::UNAVAILABLE => Kind::Unavailable,
            exit::CANTCREAT => Kind::CantCreate,
            _ => Kind::Software,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Error {
    pub kind: Kind,
    msg: String,
}

impl Error {
    pub fn new(kind: Kind, msg: impl Into<String>) -> Self {
        Error {
            kind,
            msg: msg.into(),
        }
    }
    pub fn usage(msg: impl Into<String>) -> Self {
        Self::new(Kind::Usage, msg)
    }
    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(Kind::Config, msg)
    }
    pub fn tempfail(msg: impl Into<String>) -> Self {
        Self::new(Kind::TempFail, msg)
    }
    pub fn data(msg: impl Into<String>) -> Self {
        Self::new(Kind::Data, msg)
    }
    pub fn software(msg: impl Into<String>) -> Self {
        Self::new(Kind::Software, msg)
    }
    /// An I/O error on `what`: temporary, since the disk or the pipe may come back.
    pub fn io(what: impl fmt::Display, e: std::io::Error) -> Self {
        Self::tempfail(format!("{what}: {e}"))
    }
    /// An input file named by the user that cannot be opened or read: 66 when it is missing,
    /// not a file, or not readable; otherwise an I/O error (temporary).
    pub fn input(path: &std::path::Path, e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::NotFound | K::PermissionDenied | K::IsADirectory => {
                Self::new(Kind::NoInput, format!("{}: {e}", path.display()))
            }
            _ => Self::io(path.display(), e),
        }
    }
    /// Prefixes the message with context.
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.msg = format!("{ctx}: {}", self.msg);
        self
    }
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            Kind::Usage => exit::USAGE,
            Kind::Config => exit::CONFIG,
            Kind::TempFail => exit::TEMPFAIL,
            Kind::Data => exit::DATAERR,
            Kind::NoInput => exit::NOINPUT,
            Kind::NoPerm => exit::NOPERM,
            Kind::Unavailable => exit::UNAVAILABLE,
            Kind::Software => exit::SOFTWARE,
            Kind::CantCreate => exit::CANTCREAT,
        }
    }
    pub fn message(&self) -> &str {
        &self.msg
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Writes one line to stderr, for the messages a command ends with. Unlike `eprintln!`, never
/// panics when stderr is gone (a closed pipe): the exit code must stay the one the caller acts
/// on (75, 78…), not a panic's 101.
pub fn say(line: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
