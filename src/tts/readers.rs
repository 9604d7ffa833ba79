//! Readers: turn alert values into text a voice reads intelligibly on the
//! phone. Host names and addresses are spelled, ticket numbers read digit
//! by digit, and symbols that would be read as noise are dropped.

use crate::ivr::dialplan::Language;

const DIGITS_EN: [&str; 10] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
];
const DIGITS_JA: [&str; 10] = [
    "ゼロ",
    "イチ",
    "ニー",
    "サン",
    "ヨン",
    "ゴー",
    "ロク",
    "ナナ",
    "ハチ",
    "キュウ",
];
const LETTERS_JA: [&str; 26] = [
    "エー",
    "ビー",
    "シー",
    "ディー",
    "イー",
    "エフ",
    "ジー",
    "エイチ",
    "アイ",
    "ジェー",
    "ケー",
    "エル",
    "エム",
    "エヌ",
    "オー",
    "ピー",
    "キュー",
    "アール",
    "エス",
    "ティー",
    "ユー",
    "ブイ",
    "ダブリュー",
    "エックス",
    "ワイ",
    "ゼット",
];

fn digit(d: char, lang: Language) -> &'static str {
    let i = d.to_digit(10).unwrap_or(0) as usize;
    match lang {
        Language::En => DIGITS_EN[i],
        Language::Ja => DIGITS_JA[i],
    }
}

fn letter(c: char, lang: Language) -> String {
    match lang {
        Language::En => c.to_ascii_lowercase().to_string(),
        Language::Ja => {
            let i = (c.to_ascii_lowercase() as u8).wrapping_sub(b'a') as usize;
            LETTERS_JA.get(i).map_or(String::new(), |s| s.to_string())
        }
    }
}

/// A run of letters: said as a word when it looks like one (3+ letters
/// with a vowel, English only), otherwise spelled.
fn letters(run: &str, lang: Language) -> Vec<String> {
    let wordlike = run.len() >= 3 && run.chars().any(|c| "aeiouAEIOU".contains(c));
    if lang == Language::En && wordlike {
        vec![run.to_ascii_lowercase()]
    } else {
        run.chars().map(|c| letter(c, lang)).collect()
    }
}

fn separator(c: char, lang: Language) -> Option<&'static str> {
    match (c, lang) {
        ('.', Language::En) => Some("dot"),
        ('.', Language::Ja) => Some("ドット"),
        (':', Language::En) => Some("colon"),
        (':', Language::Ja) => Some("コロン"),
        ('/', Language::En) => Some("slash"),
        ('/', Language::Ja) => Some("スラッシュ"),
        _ => None,
    }
}

/// Spell a host name or IP address: `web-01.example.jp` becomes
/// "web zero one dot example dot j p".
pub fn spell_host(host: &str, lang: Language) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut run = String::new();
    let flush = |run: &mut String, words: &mut Vec<String>| {
        if !run.is_empty() {
            words.extend(letters(run, lang));
            run.clear();
        }
    };
    for c in host.chars() {
        if c.is_ascii_alphabetic() {
            run.push(c);
            continue;
        }
        flush(&mut run, &mut words);
        if c.is_ascii_digit() {
            words.push(digit(c, lang).to_string());
        } else if let Some(s) = separator(c, lang) {
            words.push(s.to_string());
        }
        // '-', '_' and anything else: a pause at most, never a sound.
    }
    flush(&mut run, &mut words);
    words.join(if lang == Language::Ja { "、" } else { " " })
}

/// Read a ticket or other identifier digit by digit; letters spelled.
pub fn spell_id(id: &str, lang: Language) -> String {
    let words: Vec<String> = id
        .chars()
        .filter_map(|c| {
            if c.is_ascii_digit() {
                Some(digit(c, lang).to_string())
            } else if c.is_ascii_alphabetic() {
                Some(letter(c, lang))
            } else {
                None
            }
        })
        .collect();
    words.join(if lang == Language::Ja { "、" } else { " " })
}

/// Free text: keep letters, digits, spaces and sentence punctuation; drop
/// symbols a voice would read as noise.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_alphanumeric() || c.is_whitespace() || ".,:;!?%'-/()、。・ー「」".contains(c)
        {
            out.push(c);
        } else if !out.ends_with(' ') {
            out.push(' ');
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Clock times (`03:05`, `23:40`) said the way people say them; the
/// engines read the rest of the numbers naturally themselves.
pub fn times(text: &str, lang: Language) -> String {
    let words: Vec<String> = text
        .split(' ')
        .map(|w| {
            let core = w.trim_end_matches([',', '.', ';']);
            let tail = &w[core.len()..];
            let Some((h, m)) = core.split_once(':') else {
                return w.to_string();
            };
            let (Ok(h), Ok(m)) = (h.parse::<u32>(), m.parse::<u32>()) else {
                return w.to_string();
            };
            if h > 23 || m > 59 || core.len() > 5 {
                return w.to_string();
            }
            let said = match (lang, m) {
                (Language::En, 0) => format!("{h} o'clock"),
                (Language::En, m) if m < 10 => format!("{h} oh {m}"),
                (Language::En, m) => format!("{h} {m}"),
                (Language::Ja, 0) => format!("{h}時"),
                (Language::Ja, m) => format!("{h}時{m}分"),
            };
            format!("{said}{tail}")
        })
        .collect();
    words.join(" ")
}

/// Prepare a notification variable for speech, by what it holds.
pub fn read_variable(name: &str, value: &str, lang: Language) -> String {
    match name {
        "host" => spell_host(value, lang),
        "ticket" => spell_id(value, lang),
        _ => times(&clean(value), lang),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_in_english_and_japanese() {
        assert_eq!(
            spell_host("web-01.example.jp", Language::En),
            "web zero one dot example dot j p"
        );
        assert_eq!(
            spell_host("192.168.0.10", Language::En),
            "one nine two dot one six eight dot zero dot one zero"
        );
        assert_eq!(
            spell_host("db-2.jp", Language::Ja),
            "ディー、ビー、ニー、ドット、ジェー、ピー"
        );
        assert_eq!(
            spell_host("fe80::1", Language::En),
            "f e eight zero colon colon one"
        );
    }

    #[test]
    fn tickets_digits_and_symbols() {
        assert_eq!(
            spell_id("INC-20481", Language::En),
            "i n c two zero four eight one"
        );
        assert_eq!(spell_id("4711", Language::Ja), "ヨン、ナナ、イチ、イチ");
        assert_eq!(clean("CPU > 95% <<ALERT>> ### disk"), "CPU 95% ALERT disk");
        assert_eq!(
            read_variable("summary", "load ~ 12.5 @ 03:00", Language::En),
            "load 12.5 3 o'clock"
        );
        assert_eq!(
            read_variable("summary", "down since 23:05, retry 7:45.", Language::En),
            "down since 23 oh 5, retry 7 45."
        );
        assert_eq!(
            read_variable("summary", "停止 03:30", Language::Ja),
            "停止 3時30分"
        );
    }
}
