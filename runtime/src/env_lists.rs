//! Environment overrides of list elements.
//!
//! Figment's environment provider nests a variable's name on `__` into tables, which cannot
//! address an element of a list: `PREFIX__CLUSTERS__0__TOKEN_SECRET_FILE` would become a table
//! `clusters` with a key `0` and replace the list. Variables with a numeric segment are
//! therefore left out of figment and applied here, onto the merged configuration, walking
//! tables by key and lists by index.

use serde_json::Value;

use crate::RuntimeError;

/// Whether a variable name (prefix removed) addresses a list element.
pub(crate) fn addresses_list_element(name: &str) -> bool {
    name.split("__")
        .any(|seg| !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()))
}

/// The value of an environment variable as configuration: a number, `true`/`false`, or text.
fn parse_value(text: &str) -> Value {
    match serde_json::from_str::<Value>(text.trim()) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(text.to_owned()),
    }
}

/// Applies the variables `vars` (full names, with `prefix`) that address list elements.
pub(crate) fn apply(
    config: &mut Value,
    prefix: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Result<(), RuntimeError> {
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix(prefix)?.to_owned();
            addresses_list_element(&rest).then_some((rest, value))
        })
        .collect();
    vars.sort();
    for (rest, value) in vars {
        let var = format!("{prefix}{rest}");
        let segments: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        let mut node = &mut *config;
        let mut path = String::new();
        for (i, seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let invalid = |detail: String| RuntimeError::Invalid {
                field: var.clone(),
                detail,
            };
            node = match node {
                Value::Array(items) => {
                    let index: usize = seg.parse().map_err(|_| {
                        invalid(format!("{path} is a list: expected an index, got {seg:?}"))
                    })?;
                    let len = items.len();
                    items.get_mut(index).ok_or_else(|| {
                        invalid(format!(
                            "{path} has {len} element(s): index {index} does not exist (add it to the file first)"
                        ))
                    })?
                }
                Value::Object(map) => {
                    if last {
                        map.insert(seg.clone(), parse_value(&value));
                        break;
                    }
                    map.entry(seg.clone())
                        .or_insert_with(|| Value::Object(Default::default()))
                }
                _ => {
                    return Err(invalid(format!("{path} is a value, not a table or list")));
                }
            };
            if last {
                *node = parse_value(&value);
            }
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(seg);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sets_fields_of_list_elements() {
        let mut v = json!({"clusters": [{"name": "a", "interval_s": 30}, {"name": "b"}], "nats": {"url": "x"}});
        apply(
            &mut v,
            "P__",
            [
                (
                    "P__CLUSTERS__1__TOKEN_SECRET_FILE".to_owned(),
                    "/run/secret".to_owned(),
                ),
                ("P__CLUSTERS__0__INTERVAL_S".to_owned(), "10".to_owned()),
                ("P__NATS__URL".to_owned(), "ignored: no index".to_owned()),
                (
                    "OTHER__CLUSTERS__0__NAME".to_owned(),
                    "ignored: other prefix".to_owned(),
                ),
            ],
        )
        .expect("applies");
        assert_eq!(
            v,
            json!({"clusters": [{"name": "a", "interval_s": 10},
                                {"name": "b", "token_secret_file": "/run/secret"}],
                   "nats": {"url": "x"}})
        );
    }

    #[test]
    fn a_missing_element_is_an_error_naming_the_variable() {
        let mut v = json!({"clusters": [{"name": "a"}]});
        let e = apply(
            &mut v,
            "P__",
            [("P__CLUSTERS__3__NAME".to_owned(), "x".to_owned())],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration, P__CLUSTERS__3__NAME: clusters has 1 element(s): index 3 does not exist (add it to the file first)"
        );
        assert!(addresses_list_element("CLUSTERS__0__NAME"));
        assert!(!addresses_list_element("NATS__URL"));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closures return figment's own large error
    fn load_config_applies_list_elements_from_the_environment() {
        #[derive(Debug, serde::Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct Cluster {
            name: String,
            #[serde(default)]
            interval_s: u64,
        }
        #[derive(Debug, serde::Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        struct Conf {
            clusters: Vec<Cluster>,
            level: u32,
        }
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "level = 1\n[[clusters]]\nname = \"a\"\n[[clusters]]\nname = \"b\"\n",
            )?;
            jail.set_env("T__CLUSTERS__1__INTERVAL_S", "15");
            jail.set_env("T__LEVEL", "2");
            let c: Conf = crate::load_config(Some(std::path::Path::new("c.toml")), "T__")
                .map_err(|e| e.to_string())?;
            assert_eq!(c.level, 2);
            assert_eq!(
                c.clusters,
                [
                    Cluster {
                        name: "a".into(),
                        interval_s: 0
                    },
                    Cluster {
                        name: "b".into(),
                        interval_s: 15
                    }
                ]
            );
            jail.set_env("T__CLUSTERS__0__BOGUS", "x");
            let e = crate::load_config::<Conf>(Some(std::path::Path::new("c.toml")), "T__")
                .expect_err("unknown key refused");
            assert!(e.to_string().contains("bogus"), "{e}");
            Ok(())
        });
    }
}
