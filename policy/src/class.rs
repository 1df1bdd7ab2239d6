//! Service classes: how a tenant's work is treated when others want the GPU
//! too.

/// A tenant's class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// While it has work, best-effort tenants hold their launches.
    LatencyCritical,
    Standard,
    /// Holds its launches while a latency-critical tenant has work.
    BestEffort,
}

impl Class {
    /// The accepted spellings, for error messages.
    pub const FORMS: &'static str = "latency-critical, standard, best-effort";

    pub fn parse(s: &str) -> Option<Class> {
        match s.trim() {
            "latency-critical" => Some(Class::LatencyCritical),
            "standard" => Some(Class::Standard),
            "best-effort" => Some(Class::BestEffort),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::LatencyCritical => "latency-critical",
            Class::Standard => "standard",
            Class::BestEffort => "best-effort",
        }
    }

    /// Its code in a budget page (the broker's wire header keeps these
    /// equal to `TSLICE_CLASS_*`).
    pub fn code(self) -> u32 {
        match self {
            Class::Standard => 0,
            Class::LatencyCritical => 1,
            Class::BestEffort => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_parses_from_its_name() {
        for c in [Class::LatencyCritical, Class::Standard, Class::BestEffort] {
            assert_eq!(Class::parse(c.as_str()), Some(c));
            assert!(Class::FORMS.contains(c.as_str()));
        }
        assert_eq!(Class::parse(" standard "), Some(Class::Standard));
        assert_eq!(Class::parse("Standard"), None);
        assert_eq!(Class::parse(""), None);
    }
}
