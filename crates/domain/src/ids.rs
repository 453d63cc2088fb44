//! Identifiers that cross the wire: merchant and store numbers and the merchant's own keys.
//!
//! Each is checked once when it is parsed; past that point it is printable, bounded text.

use std::fmt;

/// Why a text is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("is empty")]
    Empty,
    #[error("is longer than {max} characters")]
    TooLong { max: usize },
    #[error("contains a control character or white space at its ends")]
    BadCharacter,
}

fn check(text: &str, max: usize) -> Result<(), IdError> {
    if text.is_empty() {
        return Err(IdError::Empty);
    }
    if text.chars().count() > max {
        return Err(IdError::TooLong { max });
    }
    if text.chars().any(char::is_control) || text.trim() != text {
        return Err(IdError::BadCharacter);
    }
    Ok(())
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The longest value accepted, in characters.
            pub const MAX_LEN: usize = $max;

            pub fn parse(text: &str) -> Result<Self, IdError> {
                check(text, $max)?;
                Ok($name(text.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

text_id!(
    /// A merchant's number, e.g. "200043".
    MerchantNo,
    32
);
text_id!(
    /// A store's number within a merchant, e.g. "303660".
    StoreNo,
    32
);
text_id!(
    /// A merchant-chosen idempotency key: a payment reference, a refund reference, a request id.
    Key,
    64
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bounded_printable_text() {
        assert!(Key::parse("test202001011206").is_ok());
        assert_eq!(Key::parse(""), Err(IdError::Empty));
        assert_eq!(Key::parse(" a"), Err(IdError::BadCharacter));
        assert_eq!(Key::parse("a\nb"), Err(IdError::BadCharacter));
        assert_eq!(
            Key::parse(&"x".repeat(65)),
            Err(IdError::TooLong { max: 64 })
        );
        assert!(MerchantNo::parse("200043").is_ok());
    }
}
