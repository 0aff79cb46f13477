//! Container ids: `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}` (numeric ids like 101 are the common
//! case). Checked before anything is created, so `../x` never reaches a path.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CtId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid container id '{0}': use 1 to 64 characters from A-Z a-z 0-9 _ . -, starting with a letter or digit")]
pub struct CtIdError(pub String);

impl CtId {
    pub fn parse(s: &str) -> Result<CtId, CtIdError> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if first_ok && rest_ok && s.len() <= 64 {
            Ok(CtId(s.to_string()))
        } else {
            Err(CtIdError(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for CtId {
    type Error = CtIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        CtId::parse(&s)
    }
}

impl From<CtId> for String {
    fn from(id: CtId) -> String {
        id.0
    }
}

impl fmt::Display for CtId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_openvz_style_ids() {
        for ok in ["101", "web-1", "a.b_c", &"x".repeat(64)] {
            assert!(CtId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_paths_and_odd_names() {
        for bad in ["", "../x", "..", ".hidden", "-x", "a/b", "a b", "ünï", &"x".repeat(65)] {
            assert!(CtId::parse(bad).is_err(), "{bad:?}");
        }
    }
}
