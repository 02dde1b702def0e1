//! A packet that breaks the protocol, and the MQTT 5 reason code that
//! names how.

/// Why a packet broke the protocol; the connection must then be closed
/// (spec §4.8: "if either the Server or Client encounters a protocol
/// violation, it MUST close the Network Connection"). MQTT 5 names the kind
/// of violation in the DISCONNECT it sends before closing (§4.13): see
/// [`Violation::reason_code`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// What broke, for the log, with the spec's tag where there is one.
    pub text: String,
    /// The MQTT 5 reason code (§2.4): 0x81 Malformed Packet, 0x82 Protocol
    /// Error, or a more precise one (0x94 Topic Alias invalid, 0x95 Packet
    /// too large...).
    pub reason_code: u8,
}

impl Violation {
    /// A packet that breaks a rule of the protocol: reason code 0x82.
    pub fn protocol(text: impl Into<String>) -> Self {
        Violation {
            text: text.into(),
            reason_code: 0x82,
        }
    }

    /// A packet that cannot be read as the spec lays it out: 0x81.
    pub fn malformed(text: impl Into<String>) -> Self {
        Violation {
            text: text.into(),
            reason_code: 0x81,
        }
    }

    /// A violation with a reason code of its own (spec §2.4, Table 2-6).
    pub fn with_code(reason_code: u8, text: impl Into<String>) -> Self {
        Violation {
            text: text.into(),
            reason_code,
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

pub(super) fn violation(text: impl Into<String>) -> Violation {
    Violation::malformed(text)
}
