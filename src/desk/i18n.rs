//! The desk's languages: English and Portuguese (pt-BR), with every label in one table.
//!
//! Keys are the English texts (Frappe's `__("...")` convention), so English needs no table and
//! a missing translation falls back to English instead of showing a key.

use serde_json::{Map, Value};

/// A language the desk speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English.
    En,
    /// Brazilian Portuguese.
    PtBr,
}

impl Lang {
    /// The code stored in `User.language` and used in `<html lang>`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::PtBr => "pt-BR",
        }
    }

    /// The language of a `User.language` value or a language tag, if the desk speaks it.
    pub fn parse(tag: &str) -> Option<Lang> {
        let primary = tag
            .trim()
            .split(['-', '_'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Lang::En),
            "pt" => Some(Lang::PtBr),
            _ => None,
        }
    }
}

/// The user's own language when set, else the browser's.
pub fn choose(user_language: Option<&str>, accept_language: &str) -> Lang {
    user_language
        .and_then(Lang::parse)
        .unwrap_or_else(|| from_accept_language(accept_language))
}

/// The best language of an `Accept-Language` header (by `q`), English when none is spoken here.
pub fn from_accept_language(header: &str) -> Lang {
    let mut best: Option<(f32, usize, Lang)> = None;
    for (i, part) in header.split(',').enumerate() {
        let mut bits = part.split(';');
        let tag = bits.next().unwrap_or("");
        let q = bits
            .find_map(|b| b.trim().strip_prefix("q="))
            .and_then(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let Some(lang) = Lang::parse(tag) else {
            continue;
        };
        // Higher q wins; on a tie the earlier entry does.
        if q > 0.0 && best.is_none_or(|(bq, _, _)| q > bq) {
            best = Some((q, i, lang));
        }
    }
    best.map(|(_, _, l)| l).unwrap_or(Lang::En)
}

/// The translations the browser needs for `lang`: English text -> translated text.
pub fn messages(lang: Lang) -> Value {
    let mut m = Map::new();
    if lang == Lang::PtBr {
        for (en, pt) in TABLE {
            m.insert((*en).to_string(), Value::String((*pt).to_string()));
        }
    }
    Value::Object(m)
}

/// Translates one text (server-rendered pages).
pub fn tr(lang: Lang, en: &str) -> String {
    match lang {
        Lang::En => en.to_string(),
        Lang::PtBr => TABLE
            .iter()
            .find(|(k, _)| *k == en)
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| en.to_string()),
    }
}

/// The translation table: (English, Português do Brasil).
pub const TABLE: &[(&str, &str)] = &include!("translations.in");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language() {
        assert_eq!(from_accept_language("pt-BR,pt;q=0.9,en;q=0.8"), Lang::PtBr);
        assert_eq!(from_accept_language("en-US,en;q=0.9,pt;q=0.5"), Lang::En);
        assert_eq!(from_accept_language("fr-FR, pt;q=0.4"), Lang::PtBr);
        assert_eq!(from_accept_language("de"), Lang::En);
        assert_eq!(from_accept_language(""), Lang::En);
        assert_eq!(from_accept_language("en;q=0.2, pt-PT;q=0.7"), Lang::PtBr);
    }

    #[test]
    fn user_language_wins() {
        assert_eq!(choose(Some("pt-BR"), "en-US"), Lang::PtBr);
        assert_eq!(choose(Some("en"), "pt-BR"), Lang::En);
        assert_eq!(choose(None, "pt-BR"), Lang::PtBr);
        assert_eq!(choose(Some(""), "pt-BR"), Lang::PtBr);
    }

    #[test]
    fn table_has_no_duplicates_or_blanks() {
        let mut seen = std::collections::HashSet::new();
        for (en, pt) in TABLE {
            assert!(seen.insert(*en), "duplicate key {en:?}");
            assert!(!pt.trim().is_empty(), "empty translation of {en:?}");
        }
    }

    /// Every `__("...")` literal of the desk's scripts is in the table.
    #[test]
    fn every_script_label_is_translated() {
        for script in [
            super::super::assets::DESK_JS,
            super::super::assets::LOGIN_JS,
        ] {
            let mut rest = script;
            while let Some(i) = rest.find("__(\"") {
                rest = &rest[i + 4..];
                let end = rest.find('"').expect("closing quote");
                let key = &rest[..end];
                assert!(
                    TABLE.iter().any(|(en, _)| *en == key),
                    "missing pt-BR translation of {key:?}"
                );
                rest = &rest[end..];
            }
        }
    }
}
