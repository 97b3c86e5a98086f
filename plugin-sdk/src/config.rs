//! Typed access to the operator's settings for this plugin (the `config` table of the plugin's
//! entry in Sluice's TOML file).

use std::fmt;

use crate::bindings::sluice::filter::types::ConfigValue;
use crate::host;

/// The operator's settings for this plugin. Every read asks the host, so it is always current.
#[derive(Debug, Clone, Copy, Default)]
pub struct Config;

/// A setting that is missing or has the wrong type or value. Its message names the key.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The setting's key.
    pub key: String,
    /// What is wrong with it.
    pub problem: String,
}

impl ConfigError {
    /// A problem with setting `key`.
    pub fn new(key: &str, problem: impl Into<String>) -> Self {
        ConfigError {
            key: key.to_string(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "setting `{}`: {}", self.key, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// A type a setting can be read as.
pub trait FromConfig: Sized {
    /// What the type is called in error messages, e.g. "a whole number".
    const EXPECTED: &'static str;
    /// Converts the value, or `None` when it has the wrong type or range.
    fn from_config(value: &ConfigValue) -> Option<Self>;
}

impl FromConfig for String {
    const EXPECTED: &'static str = "a string";
    fn from_config(value: &ConfigValue) -> Option<Self> {
        match value {
            ConfigValue::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl FromConfig for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_config(value: &ConfigValue) -> Option<Self> {
        match value {
            ConfigValue::Boolean(b) => Some(*b),
            _ => None,
        }
    }
}

impl FromConfig for f64 {
    const EXPECTED: &'static str = "a number";
    fn from_config(value: &ConfigValue) -> Option<Self> {
        match value {
            ConfigValue::Float(f) => Some(*f),
            ConfigValue::Integer(i) => Some(*i as f64),
            _ => None,
        }
    }
}

impl FromConfig for Vec<String> {
    const EXPECTED: &'static str = "a list";
    fn from_config(value: &ConfigValue) -> Option<Self> {
        match value {
            ConfigValue::TextList(l) => Some(l.clone()),
            _ => None,
        }
    }
}

macro_rules! integer_from_config {
    ($($t:ty => $expected:literal),*) => {$(
        impl FromConfig for $t {
            const EXPECTED: &'static str = $expected;
            fn from_config(value: &ConfigValue) -> Option<Self> {
                match value {
                    ConfigValue::Integer(i) => <$t>::try_from(*i).ok(),
                    _ => None,
                }
            }
        }
    )*};
}
integer_from_config!(
    i64 => "a whole number",
    u64 => "a whole number, 0 or more",
    u32 => "a whole number from 0 to 4294967295",
    u16 => "a whole number from 0 to 65535",
    usize => "a whole number, 0 or more"
);

impl Config {
    /// The raw value of `key`, if set.
    pub fn raw(&self, key: &str) -> Option<ConfigValue> {
        host::get_config(key)
    }

    /// Every key that is set, sorted.
    pub fn keys(&self) -> Vec<String> {
        host::config_keys()
    }

    /// `key` as a `T`, or `None` when not set; an error when set with the wrong type.
    pub fn get<T: FromConfig>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => T::from_config(&v).map(Some).ok_or_else(|| {
                ConfigError::new(
                    key,
                    format!("expected {}, found {}", T::EXPECTED, describe(&v)),
                )
            }),
        }
    }

    /// `key` as a `T`, or `default` when not set.
    pub fn get_or<T: FromConfig>(&self, key: &str, default: T) -> Result<T, ConfigError> {
        Ok(self.get(key)?.unwrap_or(default))
    }

    /// `key` as a `T`; an error when not set.
    pub fn require<T: FromConfig>(&self, key: &str) -> Result<T, ConfigError> {
        self.get(key)?
            .ok_or_else(|| ConfigError::new(key, format!("is required ({})", T::EXPECTED)))
    }

    /// Refuses any key not in `known`, so that a typo in the operator's file is reported
    /// instead of silently ignored.
    pub fn deny_unknown(&self, known: &[&str]) -> Result<(), ConfigError> {
        match self
            .keys()
            .into_iter()
            .find(|k| !known.contains(&k.as_str()))
        {
            Some(k) => Err(ConfigError::new(
                &k,
                format!("unknown setting; known settings are: {}", known.join(", ")),
            )),
            None => Ok(()),
        }
    }
}

fn describe(value: &ConfigValue) -> String {
    match value {
        ConfigValue::Text(s) => format!("the string {s:?}"),
        ConfigValue::Integer(i) => format!("the number {i}"),
        ConfigValue::Float(f) => format!("the number {f}"),
        ConfigValue::Boolean(b) => format!("{b}"),
        ConfigValue::TextList(_) => "a list".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::set_config;

    #[test]
    fn typed_reads_and_errors_name_the_key() {
        set_config(&[
            ("limit", ConfigValue::Integer(-3)),
            ("name", ConfigValue::Text("x".into())),
        ]);
        let c = Config;
        assert_eq!(c.get::<i64>("limit"), Ok(Some(-3)));
        let e = c.get::<u32>("limit").unwrap_err();
        assert_eq!(
            e.to_string(),
            "setting `limit`: expected a whole number from 0 to 4294967295, found the number -3"
        );
        assert_eq!(c.get_or("missing", 7u32), Ok(7));
        assert!(
            c.require::<String>("missing")
                .unwrap_err()
                .to_string()
                .contains("is required")
        );
        assert!(
            c.deny_unknown(&["limit"])
                .unwrap_err()
                .to_string()
                .contains("`name`")
        );
    }
}
