//! BeagleBone Black expansion header pins (P8_x, P9_x) that can be driven as GPIO, mapped to
//! their AM335x GPIO bank and line offset.
//!
//! Source: BeagleBone Black System Reference Manual rev. C, tables 12 (P8) and 13 (P9), mode 7
//! column (`gpioB[N]`); Linux number = 32*B + N. Cross-checked against the header tables of
//! Adafruit_BBIO and libbbb. The pins the MicroFaaS reference rack wires to worker power
//! buttons are checked one by one in the tests below.

/// (header pin, GPIO bank, line offset within the bank)
pub const PINS: &[(&str, u8, u8)] = &[
    ("P8_3", 1, 6),
    ("P8_4", 1, 7),
    ("P8_5", 1, 2),
    ("P8_6", 1, 3),
    ("P8_7", 2, 2),
    ("P8_8", 2, 3),
    ("P8_9", 2, 5),
    ("P8_10", 2, 4),
    ("P8_11", 1, 13),
    ("P8_12", 1, 12),
    ("P8_13", 0, 23),
    ("P8_14", 0, 26),
    ("P8_15", 1, 15),
    ("P8_16", 1, 14),
    ("P8_17", 0, 27),
    ("P8_18", 2, 1),
    ("P8_19", 0, 22),
    ("P8_20", 1, 31),
    ("P8_21", 1, 30),
    ("P8_22", 1, 5),
    ("P8_23", 1, 4),
    ("P8_24", 1, 1),
    ("P8_25", 1, 0),
    ("P8_26", 1, 29),
    ("P8_27", 2, 22),
    ("P8_28", 2, 24),
    ("P8_29", 2, 23),
    ("P8_30", 2, 25),
    ("P8_31", 0, 10),
    ("P8_32", 0, 11),
    ("P8_33", 0, 9),
    ("P8_34", 2, 17),
    ("P8_35", 0, 8),
    ("P8_36", 2, 16),
    ("P8_37", 2, 14),
    ("P8_38", 2, 15),
    ("P8_39", 2, 12),
    ("P8_40", 2, 13),
    ("P8_41", 2, 10),
    ("P8_42", 2, 11),
    ("P8_43", 2, 8),
    ("P8_44", 2, 9),
    ("P8_45", 2, 6),
    ("P8_46", 2, 7),
    ("P9_11", 0, 30),
    ("P9_12", 1, 28),
    ("P9_13", 0, 31),
    ("P9_14", 1, 18),
    ("P9_15", 1, 16),
    ("P9_16", 1, 19),
    ("P9_17", 0, 5),
    ("P9_18", 0, 4),
    ("P9_19", 0, 13),
    ("P9_20", 0, 12),
    ("P9_21", 0, 3),
    ("P9_22", 0, 2),
    ("P9_23", 1, 17),
    ("P9_24", 0, 15),
    ("P9_25", 3, 21),
    ("P9_26", 0, 14),
    ("P9_27", 3, 19),
    ("P9_28", 3, 17),
    ("P9_29", 3, 15),
    ("P9_30", 3, 16),
    ("P9_31", 3, 14),
    ("P9_41", 0, 20),
    ("P9_42", 0, 7),
];

/// A header pin's GPIO bank and offset. Accepts `P9_12`, `p9_12` and `P9.12`.
pub fn lookup(pin: &str) -> Option<(u8, u8)> {
    let norm = pin.trim().to_ascii_uppercase().replace('.', "_");
    PINS.iter()
        .find(|(name, _, _)| *name == norm)
        .map(|&(_, bank, line)| (bank, line))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The MicroFaaS rack: each worker's PWR_BUT on one of these orchestrator pins; the Linux
    /// GPIO numbers are the ones its settings used.
    #[test]
    fn reference_rack_pins() {
        let expected = [
            ("P9_12", 60),
            ("P9_15", 48),
            ("P9_23", 49),
            ("P9_25", 117),
            ("P9_27", 115),
            ("P8_8", 67),
            ("P8_10", 68),
            ("P8_11", 45),
            ("P8_14", 26),
            ("P9_26", 14),
        ];
        for (pin, gpio) in expected {
            let (bank, line) = lookup(pin).unwrap_or_else(|| panic!("{pin} missing"));
            assert_eq!(u32::from(bank) * 32 + u32::from(line), gpio, "{pin}");
        }
    }

    #[test]
    fn no_line_listed_twice() {
        let mut seen = std::collections::HashSet::new();
        for (pin, bank, line) in PINS {
            assert!(seen.insert((bank, line)), "{pin} duplicates a line");
            assert!(*line < 32);
        }
    }

    #[test]
    fn spellings() {
        assert_eq!(lookup("p9.12"), Some((1, 28)));
        assert_eq!(lookup("P9_1"), None);
    }
}
