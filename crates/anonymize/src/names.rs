//! Person names in free text, without the dataset: a token pass over
//! capitalized words with three kinds of evidence.
//!
//! 1. An honorific (`Mr`, `Mrs`, `Dr`, `Prof`, `Herr`, `Mme`, …) followed
//!    by capitalized words: those words.
//! 2. A cue word (`patient`, `client`, `named`, `dear`, `wife`, …, or
//!    `name is`/`name:`) followed by capitalized words: those words.
//! 3. The name lists (first names and the 10,000 most frequent surnames of
//!    the 1990 US Census, public domain, in `data/`): a capitalized first
//!    name with the capitalized words after it; a capitalized listed
//!    surname on its own. A listed name that is also a common English word
//!    (`Will`, `May`, `Rose`, `Young`) counts only next to another name.
//!
//! Known limits: names outside the lists with no cue (`Okafor called`),
//! names written in lower case, and names in scripts without letter case
//! are not found; capitalized words after a first name are taken as its
//! surname even when they are not (`Paris Hilton` and `Jordan River` alike).

use std::collections::HashSet;

/// The name lists, upper-case ASCII.
pub(crate) struct Lists {
    first: HashSet<&'static str>,
    first_common: HashSet<&'static str>,
    last: HashSet<&'static str>,
    last_common: HashSet<&'static str>,
}

fn parse(text: &'static str) -> (HashSet<&'static str>, HashSet<&'static str>) {
    let mut plain = HashSet::new();
    let mut common = HashSet::new();
    for l in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        match l.strip_prefix('~') {
            Some(w) => common.insert(w),
            None => plain.insert(l),
        };
    }
    (plain, common)
}

impl Lists {
    pub(crate) fn load() -> Lists {
        let (first, first_common) = parse(include_str!("../data/first-names.txt"));
        let (last, last_common) = parse(include_str!("../data/surnames.txt"));
        Lists {
            first,
            first_common,
            last,
            last_common,
        }
    }
}

const HONORIFICS: &[&str] = &[
    "mr",
    "mrs",
    "ms",
    "miss",
    "mx",
    "dr",
    "prof",
    "professor",
    "sir",
    "dame",
    "madam",
    "mme",
    "mlle",
    "herr",
    "frau",
    "sr",
    "sra",
    "srta",
    "rev",
    "fr",
    "lord",
    "lady",
];

const CUES: &[&str] = &[
    "named",
    "patient",
    "client",
    "customer",
    "dear",
    "wife",
    "husband",
    "son",
    "daughter",
    "mother",
    "father",
    "sister",
    "brother",
    "partner",
    "spouse",
    "colleague",
    "signed",
    "attn",
    "caller",
    "tenant",
    "employee",
    "applicant",
    "nurse",
    "doctor",
];

/// Capitalized words that are never a name after a cue or honorific.
const NOT_NAMES: &[&str] = &[
    "I",
    "The",
    "A",
    "An",
    "This",
    "That",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
    "He",
    "She",
    "They",
    "We",
    "It",
    "His",
    "Her",
    "Their",
    "Our",
    "My",
    "Your",
];

struct Token {
    start: usize,
    end: usize,
    capital: bool,
    /// Upper-case ASCII fold, for the lists (capitalized tokens only).
    key: String,
}

/// ASCII upper case of a Latin letter, diacritics dropped.
fn fold_letter(c: char) -> Option<char> {
    if c.is_ascii_alphabetic() {
        return Some(c.to_ascii_uppercase());
    }
    let u = c.to_uppercase().next().unwrap_or(c);
    Some(match u {
        'À'..='Å' => 'A',
        'Ç' | 'Č' | 'Ć' => 'C',
        'È'..='Ë' | 'Ě' => 'E',
        'Ì'..='Ï' => 'I',
        'Ñ' | 'Ń' => 'N',
        'Ò'..='Ö' | 'Ø' => 'O',
        'Ù'..='Ü' => 'U',
        'Ý' | 'Ÿ' => 'Y',
        'Š' | 'Ś' => 'S',
        'Ž' | 'Ź' | 'Ż' => 'Z',
        'Ł' => 'L',
        'Ř' => 'R',
        'ß' => 'S',
        _ => return None,
    })
}

fn tokens(t: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut it = t.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if !c.is_alphabetic() {
            continue;
        }
        let mut end = i + c.len_utf8();
        let capital = c.is_uppercase();
        let mut key = String::new();
        if capital {
            key.extend(fold_letter(c));
        }
        while let Some(&(j, d)) = it.peek() {
            if d.is_alphabetic() {
                if capital {
                    key.extend(fold_letter(d));
                }
                end = j + d.len_utf8();
                it.next();
            } else if matches!(d, '\'' | '’' | '-')
                && t[j + d.len_utf8()..]
                    .chars()
                    .next()
                    .is_some_and(char::is_alphabetic)
            {
                end = j + d.len_utf8();
                it.next();
            } else {
                break;
            }
        }
        out.push(Token {
            start: i,
            end,
            capital,
            key,
        });
    }
    out
}

/// Only white space (or an initial's dot and white space) between two tokens.
fn adjacent(t: &str, a: &Token, b: &Token) -> bool {
    let gap = &t[a.end..b.start];
    !gap.is_empty()
        && gap.len() <= 3
        && gap.chars().all(|c| c == ' ' || c == '.')
        && gap.contains(' ')
        && (!gap.contains('.') || a.end - a.start == 1)
}

/// Spans of person names in `t`.
pub(crate) fn find(t: &str) -> Vec<(usize, usize)> {
    let lists = crate::detect::lists();
    let toks = tokens(t);
    let text = |k: &Token| &t[k.start..k.end];
    let namely = |k: &Token| k.capital && !NOT_NAMES.contains(&text(k));
    let listed =
        |k: &Token| lists.first.contains(k.key.as_str()) || lists.last.contains(k.key.as_str());
    let any_listed = |k: &Token| {
        listed(k)
            || lists.first_common.contains(k.key.as_str())
            || lists.last_common.contains(k.key.as_str())
    };
    // Capitalized tokens after `i`, up to three, joined by spaces or initials.
    let run = |i: usize| -> usize {
        let mut j = i;
        while j + 1 < toks.len()
            && j < i + 3
            && namely(&toks[j + 1])
            && adjacent(t, &toks[j], &toks[j + 1])
        {
            j += 1;
        }
        j
    };
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let k = &toks[i];
        let word = text(k);
        let is = |list: &[&str]| list.iter().any(|w| w.eq_ignore_ascii_case(word));
        let next_ok = i + 1 < toks.len() && namely(&toks[i + 1]);
        let gap_ok = |i: usize| {
            let g = &t[toks[i].end..toks[i + 1].start];
            g.len() <= 4
                && g.chars()
                    .all(|c| c == ' ' || c == '.' || c == ':' || c == ',')
        };
        // 1 and 2: honorifics and cues.
        let cue = (k.capital && is(HONORIFICS)) || is(CUES);
        let name_is = word.eq_ignore_ascii_case("name")
            && i + 1 < toks.len()
            && (t[k.end..toks[i + 1].start].contains(':')
                || (text(&toks[i + 1]) == "is" && i + 2 < toks.len() && namely(&toks[i + 2])));
        if name_is {
            let s = if text(&toks[i + 1]) == "is" {
                i + 2
            } else {
                i + 1
            };
            if namely(&toks[s]) {
                let e = run(s);
                out.push((toks[s].start, toks[e].end));
                i = e + 1;
                continue;
            }
        }
        if cue && next_ok && gap_ok(i) {
            let e = run(i + 1);
            out.push((toks[i + 1].start, toks[e].end));
            i = e + 1;
            continue;
        }
        // 3: the lists.
        if k.capital && !NOT_NAMES.contains(&text(k)) {
            let plain_first = lists.first.contains(k.key.as_str());
            let common_first = lists.first_common.contains(k.key.as_str());
            let follows =
                i + 1 < toks.len() && namely(&toks[i + 1]) && adjacent(t, k, &toks[i + 1]);
            if plain_first || (common_first && follows && any_listed(&toks[i + 1])) {
                let e = if follows { run(i) } else { i };
                out.push((k.start, toks[e].end));
                i = e + 1;
                continue;
            }
            if lists.last.contains(k.key.as_str()) {
                out.push((k.start, k.end));
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(t: &str) -> Vec<&str> {
        find(t).into_iter().map(|(a, b)| &t[a..b]).collect()
    }

    #[test]
    fn evidence_kinds() {
        assert_eq!(
            names("Spoke with Mrs. Adaeze Okafor today"),
            ["Adaeze Okafor"]
        );
        assert_eq!(names("the patient Ivo Kovač was seen"), ["Ivo Kovač"]);
        assert_eq!(names("my name is Zeynep Yılmaz"), ["Zeynep Yılmaz"]);
        assert_eq!(
            names("Patricia J. Gonzalez asked"),
            ["Patricia J. Gonzalez"]
        );
        assert_eq!(names("chloé lee"), Vec::<&str>::new());
        assert_eq!(names("Call from Chloé today"), ["Chloé"]);
        assert_eq!(
            names("We will meet in May. Rose garden"),
            Vec::<&str>::new()
        );
        assert_eq!(names("Will Smith called"), ["Will Smith"]);
        assert_eq!(names("Called Nguyen back"), ["Nguyen"]);
    }
}
