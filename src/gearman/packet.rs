//! Gearman packet types: the typed form of every binary-protocol packet the worker and
//! its client tools send or receive. Pure data; the byte layout lives in `codec`.

use bytes::Bytes;

/// The four magic bytes that open every binary packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Magic {
    /// `\0REQ`: sent by workers and clients.
    Req,
    /// `\0RES`: sent by job servers.
    Res,
}

impl Magic {
    pub const REQ: [u8; 4] = *b"\0REQ";
    pub const RES: [u8; 4] = *b"\0RES";

    pub fn bytes(self) -> [u8; 4] {
        match self {
            Magic::Req => Self::REQ,
            Magic::Res => Self::RES,
        }
    }
}

/// One packet of the Gearman binary protocol, with its arguments already split.
///
/// Only the packets a worker and a simple client use are modelled; the codec rejects
/// any other type number as unknown rather than guessing its layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    CanDo {
        function: Bytes,
    },
    CantDo {
        function: Bytes,
    },
    ResetAbilities,
    PreSleep,
    Noop,
    SubmitJob {
        function: Bytes,
        unique: Bytes,
        data: Bytes,
    },
    JobCreated {
        handle: Bytes,
    },
    GrabJob,
    NoJob,
    JobAssign {
        handle: Bytes,
        function: Bytes,
        data: Bytes,
    },
    WorkStatus {
        handle: Bytes,
        numerator: Bytes,
        denominator: Bytes,
    },
    WorkComplete {
        handle: Bytes,
        data: Bytes,
    },
    WorkFail {
        handle: Bytes,
    },
    EchoReq {
        data: Bytes,
    },
    EchoRes {
        data: Bytes,
    },
    Error {
        code: Bytes,
        text: Bytes,
    },
    SetClientId {
        id: Bytes,
    },
    WorkException {
        handle: Bytes,
        data: Bytes,
    },
    WorkData {
        handle: Bytes,
        data: Bytes,
    },
    WorkWarning {
        handle: Bytes,
        data: Bytes,
    },
    GrabJobUniq,
    JobAssignUniq {
        handle: Bytes,
        function: Bytes,
        unique: Bytes,
        data: Bytes,
    },
}

/// Type numbers from the Gearman protocol document.
pub mod code {
    pub const CAN_DO: u32 = 1;
    pub const CANT_DO: u32 = 2;
    pub const RESET_ABILITIES: u32 = 3;
    pub const PRE_SLEEP: u32 = 4;
    pub const NOOP: u32 = 6;
    pub const SUBMIT_JOB: u32 = 7;
    pub const JOB_CREATED: u32 = 8;
    pub const GRAB_JOB: u32 = 9;
    pub const NO_JOB: u32 = 10;
    pub const JOB_ASSIGN: u32 = 11;
    pub const WORK_STATUS: u32 = 12;
    pub const WORK_COMPLETE: u32 = 13;
    pub const WORK_FAIL: u32 = 14;
    pub const ECHO_REQ: u32 = 16;
    pub const ECHO_RES: u32 = 17;
    pub const ERROR: u32 = 19;
    pub const SET_CLIENT_ID: u32 = 22;
    pub const WORK_EXCEPTION: u32 = 25;
    pub const WORK_DATA: u32 = 28;
    pub const WORK_WARNING: u32 = 29;
    pub const GRAB_JOB_UNIQ: u32 = 30;
    pub const JOB_ASSIGN_UNIQ: u32 = 31;
}

impl Packet {
    /// The protocol type number.
    pub fn code(&self) -> u32 {
        use code::*;
        match self {
            Packet::CanDo { .. } => CAN_DO,
            Packet::CantDo { .. } => CANT_DO,
            Packet::ResetAbilities => RESET_ABILITIES,
            Packet::PreSleep => PRE_SLEEP,
            Packet::Noop => NOOP,
            Packet::SubmitJob { .. } => SUBMIT_JOB,
            Packet::JobCreated { .. } => JOB_CREATED,
            Packet::GrabJob => GRAB_JOB,
            Packet::NoJob => NO_JOB,
            Packet::JobAssign { .. } => JOB_ASSIGN,
            Packet::WorkStatus { .. } => WORK_STATUS,
            Packet::WorkComplete { .. } => WORK_COMPLETE,
            Packet::WorkFail { .. } => WORK_FAIL,
            Packet::EchoReq { .. } => ECHO_REQ,
            Packet::EchoRes { .. } => ECHO_RES,
            Packet::Error { .. } => ERROR,
            Packet::SetClientId { .. } => SET_CLIENT_ID,
            Packet::WorkException { .. } => WORK_EXCEPTION,
            Packet::WorkData { .. } => WORK_DATA,
            Packet::WorkWarning { .. } => WORK_WARNING,
            Packet::GrabJobUniq => GRAB_JOB_UNIQ,
            Packet::JobAssignUniq { .. } => JOB_ASSIGN_UNIQ,
        }
    }

    /// Who sends this packet: requests come from workers and clients, responses from
    /// the job server. `WORK_*` packets travel both ways (worker to server, then server
    /// to client); they are classed by their first leg.
    pub fn magic(&self) -> Magic {
        match self {
            Packet::Noop
            | Packet::JobCreated { .. }
            | Packet::NoJob
            | Packet::JobAssign { .. }
            | Packet::JobAssignUniq { .. }
            | Packet::EchoRes { .. }
            | Packet::Error { .. } => Magic::Res,
            _ => Magic::Req,
        }
    }

    /// The arguments in wire order; the last one may contain NUL bytes.
    pub fn args(&self) -> Vec<&Bytes> {
        match self {
            Packet::ResetAbilities
            | Packet::PreSleep
            | Packet::Noop
            | Packet::GrabJob
            | Packet::NoJob
            | Packet::GrabJobUniq => vec![],
            Packet::CanDo { function } | Packet::CantDo { function } => vec![function],
            Packet::JobCreated { handle } | Packet::WorkFail { handle } => vec![handle],
            Packet::EchoReq { data } | Packet::EchoRes { data } => vec![data],
            Packet::SetClientId { id } => vec![id],
            Packet::SubmitJob {
                function,
                unique,
                data,
            } => vec![function, unique, data],
            Packet::JobAssign {
                handle,
                function,
                data,
            } => vec![handle, function, data],
            Packet::WorkStatus {
                handle,
                numerator,
                denominator,
            } => {
                vec![handle, numerator, denominator]
            }
            Packet::WorkComplete { handle, data }
            | Packet::WorkException { handle, data }
            | Packet::WorkData { handle, data }
            | Packet::WorkWarning { handle, data } => vec![handle, data],
            Packet::Error { code, text } => vec![code, text],
            Packet::JobAssignUniq {
                handle,
                function,
                unique,
                data,
            } => {
                vec![handle, function, unique, data]
            }
        }
    }

    /// How many arguments a packet of type `code` carries, or `None` for a type this
    /// crate does not model.
    pub fn arity(code: u32) -> Option<usize> {
        use code::*;
        Some(match code {
            RESET_ABILITIES | PRE_SLEEP | NOOP | GRAB_JOB | NO_JOB | GRAB_JOB_UNIQ => 0,
            CAN_DO | CANT_DO | JOB_CREATED | WORK_FAIL | ECHO_REQ | ECHO_RES | SET_CLIENT_ID => 1,
            WORK_COMPLETE | WORK_EXCEPTION | WORK_DATA | WORK_WARNING | ERROR => 2,
            SUBMIT_JOB | JOB_ASSIGN | WORK_STATUS => 3,
            JOB_ASSIGN_UNIQ => 4,
            _ => return None,
        })
    }

    /// Builds a packet from its type number and split arguments. The caller guarantees
    /// `args.len() == arity(code)`.
    pub(crate) fn from_parts(code: u32, mut args: Vec<Bytes>) -> Option<Packet> {
        use code::*;
        let mut next = || args.remove(0);
        Some(match code {
            CAN_DO => Packet::CanDo { function: next() },
            CANT_DO => Packet::CantDo { function: next() },
            RESET_ABILITIES => Packet::ResetAbilities,
            PRE_SLEEP => Packet::PreSleep,
            NOOP => Packet::Noop,
            SUBMIT_JOB => Packet::SubmitJob {
                function: next(),
                unique: next(),
                data: next(),
            },
            JOB_CREATED => Packet::JobCreated { handle: next() },
            GRAB_JOB => Packet::GrabJob,
            NO_JOB => Packet::NoJob,
            JOB_ASSIGN => Packet::JobAssign {
                handle: next(),
                function: next(),
                data: next(),
            },
            WORK_STATUS => Packet::WorkStatus {
                handle: next(),
                numerator: next(),
                denominator: next(),
            },
            WORK_COMPLETE => Packet::WorkComplete {
                handle: next(),
                data: next(),
            },
            WORK_FAIL => Packet::WorkFail { handle: next() },
            ECHO_REQ => Packet::EchoReq { data: next() },
            ECHO_RES => Packet::EchoRes { data: next() },
            ERROR => Packet::Error {
                code: next(),
                text: next(),
            },
            SET_CLIENT_ID => Packet::SetClientId { id: next() },
            WORK_EXCEPTION => Packet::WorkException {
                handle: next(),
                data: next(),
            },
            WORK_DATA => Packet::WorkData {
                handle: next(),
                data: next(),
            },
            WORK_WARNING => Packet::WorkWarning {
                handle: next(),
                data: next(),
            },
            GRAB_JOB_UNIQ => Packet::GrabJobUniq,
            JOB_ASSIGN_UNIQ => Packet::JobAssignUniq {
                handle: next(),
                function: next(),
                unique: next(),
                data: next(),
            },
            _ => return None,
        })
    }

    /// The protocol name, for logs.
    pub fn name(&self) -> &'static str {
        type_name(self.code())
    }
}

/// The protocol name of a type number, for logs and errors.
pub fn type_name(code: u32) -> &'static str {
    use code::*;
    match code {
        CAN_DO => "CAN_DO",
        CANT_DO => "CANT_DO",
        RESET_ABILITIES => "RESET_ABILITIES",
        PRE_SLEEP => "PRE_SLEEP",
        NOOP => "NOOP",
        SUBMIT_JOB => "SUBMIT_JOB",
        JOB_CREATED => "JOB_CREATED",
        GRAB_JOB => "GRAB_JOB",
        NO_JOB => "NO_JOB",
        JOB_ASSIGN => "JOB_ASSIGN",
        WORK_STATUS => "WORK_STATUS",
        WORK_COMPLETE => "WORK_COMPLETE",
        WORK_FAIL => "WORK_FAIL",
        ECHO_REQ => "ECHO_REQ",
        ECHO_RES => "ECHO_RES",
        ERROR => "ERROR",
        SET_CLIENT_ID => "SET_CLIENT_ID",
        WORK_EXCEPTION => "WORK_EXCEPTION",
        WORK_DATA => "WORK_DATA",
        WORK_WARNING => "WORK_WARNING",
        GRAB_JOB_UNIQ => "GRAB_JOB_UNIQ",
        JOB_ASSIGN_UNIQ => "JOB_ASSIGN_UNIQ",
        _ => "unknown",
    }
}
