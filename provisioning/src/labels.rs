//! Labels and label selectors in the Hetzner syntax (`k=v,k2!=v2,k3,!k4`).

use std::collections::BTreeMap;

use crate::ProviderError;

/// The labels every dayshift server carries.
pub const LABEL_CLUSTER: &str = "dayshift-cluster";
/// Label naming the dayshift node id of a server.
pub const LABEL_NODE: &str = "dayshift-node";
/// Label naming the pool a server belongs to.
pub const LABEL_POOL: &str = "dayshift-pool";

/// Labels of a server: key to value, sorted.
pub type Labels = BTreeMap<String, String>;

/// Builds the three labels that every dayshift server must carry.
pub fn dayshift_labels(cluster: &str, node: &str, pool: &str) -> Labels {
    let mut labels = Labels::new();
    labels.insert(LABEL_CLUSTER.to_string(), cluster.to_string());
    labels.insert(LABEL_NODE.to_string(), node.to_string());
    labels.insert(LABEL_POOL.to_string(), pool.to_string());
    labels
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` (or `key==value`).
    Equals(String, String),
    /// `key!=value`.
    NotEquals(String, String),
    /// `key`: the label is present.
    Exists(String),
    /// `!key`: the label is absent.
    NotExists(String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)`.
    NotIn(String, Vec<String>),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// A selector matching every server.
    pub fn all() -> Self {
        Self::default()
    }

    /// A selector requiring `key=value` for each pair.
    pub fn equals<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            requirements: pairs
                .into_iter()
                .map(|(k, v)| Requirement::Equals(k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Selects every server of a dayshift cluster.
    pub fn cluster(name: &str) -> Self {
        Self::equals([(LABEL_CLUSTER, name)])
    }

    /// Adds `key=value`.
    pub fn and_equals(mut self, key: &str, value: &str) -> Self {
        self.requirements
            .push(Requirement::Equals(key.to_string(), value.to_string()));
        self
    }

    /// Parses the Hetzner/Kubernetes selector syntax.
    pub fn parse(text: &str) -> Result<Self, ProviderError> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self { requirements })
    }

    /// The requirements, in order.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// True when the labels satisfy every requirement.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        })
    }
}

impl std::fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::Equals(k, v) => format!("{k}={v}"),
                Requirement::NotEquals(k, v) => format!("{k}!={v}"),
                Requirement::Exists(k) => k.clone(),
                Requirement::NotExists(k) => format!("!{k}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
            })
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn invalid(part: &str) -> ProviderError {
    ProviderError::Invalid(format!(
        "label selector part `{part}` is not understood: use k=v, k!=v, k, !k, k in (a,b) or k notin (a,b)"
    ))
}

fn parse_set(key: &str, rest: &str, part: &str) -> Result<(String, Vec<String>), ProviderError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| invalid(part))?;
    let values = inner.split(',').map(|v| v.trim().to_string()).collect();
    Ok((key.trim().to_string(), values))
}

fn parse_requirement(part: &str) -> Result<Requirement, ProviderError> {
    if let Some((k, rest)) = part.split_once(" notin ") {
        let (k, vs) = parse_set(k, rest, part)?;
        return Ok(Requirement::NotIn(k, vs));
    }
    if let Some((k, rest)) = part.split_once(" in ") {
        let (k, vs) = parse_set(k, rest, part)?;
        return Ok(Requirement::In(k, vs));
    }
    if let Some((k, v)) = part.split_once("!=") {
        return Ok(Requirement::NotEquals(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = part.split_once("==") {
        return Ok(Requirement::Equals(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = part.split_once('=') {
        return Ok(Requirement::Equals(k.trim().into(), v.trim().into()));
    }
    if let Some(k) = part.strip_prefix('!') {
        return Ok(Requirement::NotExists(k.trim().into()));
    }
    if part.contains(char::is_whitespace) {
        return Err(invalid(part));
    }
    Ok(Requirement::Exists(part.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_and_matches_every_form() {
        let l = labels(&[("a", "1"), ("b", "2")]);
        for (sel, want) in [
            ("", true),
            ("a=1", true),
            ("a==1", true),
            ("a=2", false),
            ("a!=2", true),
            ("a", true),
            ("c", false),
            ("!c", true),
            ("!a", false),
            ("a in (1,3)", true),
            ("a notin (1,3)", false),
            ("a=1,b=2", true),
            ("a=1,b=3", false),
        ] {
            let s = LabelSelector::parse(sel).unwrap();
            assert_eq!(s.matches(&l), want, "selector {sel}");
            let again = LabelSelector::parse(&s.to_string()).unwrap();
            assert_eq!(again, s, "round trip of {sel}");
        }
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            LabelSelector::parse("a b"),
            Err(ProviderError::Invalid(_))
        ));
    }
}
