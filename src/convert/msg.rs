//! RFC 8803 §6 codec (skeleton).

/// An Error TLV code (RFC 8803 §6.2.8, Table 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: the version in the fixed header is not supported.
    UnsupportedVersion,
    /// 1: the message cannot be parsed and validated.
    MalformedMessage,
    /// 2: a message (TLV) type is not supported.
    UnsupportedMessage,
    /// 3: a cookie is required and the converter computed one for this client.
    MissingCookie,
    /// 32: lack of authorization (including an invalid or absent cookie).
    NotAuthorized,
    /// 33: a requested TCP option cannot be used.
    UnsupportedTcpOption,
    /// 64: the converter lacks resources.
    ResourceExceeded,
    /// 65: the converter has forwarding problems.
    NetworkFailure,
    /// 96: the destination answered with an RST.
    ConnectionReset,
    /// 97: an ICMP hard error came back from the destination.
    DestinationUnreachable,
    /// Not in RFC 8803 Table 2: mpbond's code 192 from the Private Use range (§10.2.3, 192-255),
    /// "the converter does not implement this function". `convert/` never sends it itself.
    FunctionNotImplemented,
}

impl ErrorCode {
    /// Every code, in Table 2 order.
    pub const ALL: &[ErrorCode] = &[
        ErrorCode::UnsupportedVersion,
        ErrorCode::MalformedMessage,
        ErrorCode::UnsupportedMessage,
        ErrorCode::MissingCookie,
        ErrorCode::NotAuthorized,
        ErrorCode::UnsupportedTcpOption,
        ErrorCode::ResourceExceeded,
        ErrorCode::NetworkFailure,
        ErrorCode::ConnectionReset,
        ErrorCode::DestinationUnreachable,
        ErrorCode::FunctionNotImplemented,
    ];

    /// The code on the wire (Table 2).
    pub fn code(self) -> u8 {
        match self {
            ErrorCode::UnsupportedVersion => 0,
            ErrorCode::MalformedMessage => 1,
            ErrorCode::UnsupportedMessage => 2,
            ErrorCode::MissingCookie => 3,
            ErrorCode::NotAuthorized => 32,
            ErrorCode::UnsupportedTcpOption => 33,
            ErrorCode::ResourceExceeded => 64,
            ErrorCode::NetworkFailure => 65,
            ErrorCode::ConnectionReset => 96,
            ErrorCode::DestinationUnreachable => 97,
            ErrorCode::FunctionNotImplemented => 192,
        }
    }

    /// The code for a wire value, if Table 2 defines it.
    pub fn from_code(code: u8) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.code() == code)
    }
}
