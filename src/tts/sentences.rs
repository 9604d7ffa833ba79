//! Split a rendered message into sentences, so each can be synthesised
//! (and cached) on its own and the first one is ready to play long before
//! the whole message would be. Pure: text in, sentences out.
//!
//! Every character of the input is kept, in order, in exactly one
//! sentence (only the whitespace around sentences is trimmed), so the
//! sentences said one after another say the whole message.

use crate::ivr::dialplan::Language;

/// English words that end with a full stop without ending the sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "e.g", "i.e", "approx",
    "inc", "ltd", "co", "corp", "dept", "no", "nos", "fig", "vol", "ver", "rev", "est", "min",
    "max", "sec", "hr", "hrs", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
    "oct", "nov", "dec", "mon", "tue", "wed", "thu", "fri", "sat", "sun", "a.m", "p.m", "u.s",
    "u.k",
];

/// Closing marks that belong to the sentence they follow.
fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | ')' | ']' | '}' | '”' | '’' | '」' | '』' | '）' | '】' | '〉' | '》'
    )
}

/// The sentences of `text`, in order, trimmed, none empty.
pub fn split(text: &str, lang: Language) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        let end = match lang {
            Language::Ja => ja_end(&chars, i),
            Language::En => en_end(&chars, i),
        };
        if let Some(end) = end {
            push(&mut out, &chars[start..end]);
            start = end;
            i = end;
        } else {
            i += 1;
        }
    }
    push(&mut out, &chars[start..]);
    out
}

/// The fewest speakable characters a chunk of a split sentence has
/// (about half a second of speech): a shorter first clause ("はい、")
/// joins the next, so a chunk never costs more in engine start-up and
/// edge silence than it says.
fn min_chunk(lang: Language) -> usize {
    match lang {
        Language::Ja => 4,
        Language::En => 10,
    }
}

/// A later chunk has at most this many times the speakable characters of
/// all the chunks before it. The next chunk is synthesised while the ones
/// before it are heard, so it must be ready before they end: Open JTalk
/// takes 60-100 ms per second of speech on an idle core (a third of real
/// time with the machine loaded 3x), so 3x leaves room.
const GROW: usize = 3;

fn speakable(s: &str) -> usize {
    s.chars().filter(|c| c.is_alphanumeric()).count()
}

/// Split a sentence at its clause boundaries (、，, in Japanese; a comma
/// or semicolon before a space in English) into chunks synthesised one
/// after another, so the first is short and ready early: the first chunk
/// ends at the first boundary with at least [`min_chunk`] characters
/// before it, each later one at the last boundary that keeps it within
/// [`GROW`] times what comes before it. A sentence without a usable
/// boundary is one chunk. Every character is kept, in order.
pub fn chunks(sentence: &str, lang: Language) -> Vec<String> {
    let chars: Vec<char> = sentence.chars().collect();
    // The clauses: each ends after a boundary mark and its closers.
    let mut clauses: Vec<String> = Vec::new();
    let mut start = 0;
    for i in 0..chars.len() {
        let boundary = match lang {
            // A comma between digits is a thousands separator.
            // (ASCII or full-width, between ASCII or full-width digits).
            Language::Ja => match chars[i] {
                '、' => true,
                ',' | '，' => {
                    !(i > 0
                        && chars[i - 1].is_numeric()
                        && chars.get(i + 1).is_some_and(|c| c.is_numeric()))
                }
                _ => false,
            },
            Language::En => {
                matches!(chars[i], ',' | ';') && chars.get(i + 1).is_some_and(|c| c.is_whitespace())
            }
        };
        if boundary {
            let end = after_closers(&chars, i + 1);
            if end > start {
                clauses.push(chars[start..end].iter().collect());
                start = end;
            }
        }
    }
    if start < chars.len() {
        clauses.push(chars[start..].iter().collect());
    }
    let min = min_chunk(lang);
    let mut out: Vec<String> = Vec::new();
    let mut before = 0usize;
    let mut it = clauses.into_iter().peekable();
    while let Some(c) = it.next() {
        let mut chunk = c;
        while let Some(next) = it.peek() {
            let n = speakable(&chunk);
            let grows_ok = !out.is_empty() && n + speakable(next) <= GROW * before;
            if n >= min && !grows_ok {
                break;
            }
            chunk.push_str(next);
            it.next();
        }
        // A last clause too short to stand alone joins the chunk before.
        if speakable(&chunk) < min && !out.is_empty() {
            if let Some(last) = out.last_mut() {
                last.push_str(&chunk);
            }
            continue;
        }
        before += speakable(&chunk);
        out.push(chunk);
    }
    // Trimmed as sentences are: the space after a comma is not said, and
    // would only make another cache key.
    let mut out: Vec<String> = out
        .into_iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if out.is_empty() && !sentence.trim().is_empty() {
        out.push(sentence.trim().to_string());
    }
    out
}

/// Add a sentence; one that is only punctuation joins the one before
/// (an engine says nothing for it, and a lone "。" is not worth a call
/// to the engine).
fn push(out: &mut Vec<String>, s: &[char]) {
    let s: String = s.iter().collect();
    let s = s.trim();
    if s.is_empty() {
        return;
    }
    if !s.chars().any(char::is_alphanumeric) {
        if let Some(last) = out.last_mut() {
            last.push_str(s);
            return;
        }
    }
    out.push(s.to_string());
}

/// Past the terminator at `i` and the closing marks after it.
fn after_closers(chars: &[char], mut j: usize) -> usize {
    while j < chars.len() && is_closer(chars[j]) {
        j += 1;
    }
    j
}

/// Japanese: a sentence ends after 。！？ (and their ASCII forms, which
/// cannot be a decimal point) and at a line break.
fn ja_end(chars: &[char], i: usize) -> Option<usize> {
    match chars[i] {
        '\n' | '\r' => Some(i + 1),
        '。' | '！' | '？' | '!' | '?' => {
            let mut j = i + 1;
            // "！？", "。。。": one ending.
            while j < chars.len() && matches!(chars[j], '。' | '！' | '？' | '!' | '?') {
                j += 1;
            }
            Some(after_closers(chars, j))
        }
        _ => None,
    }
}

/// English: a sentence ends after . ! ? followed by whitespace (or the
/// end), unless the full stop ends an abbreviation or an initial, or the
/// next word starts in lower case (the sentence goes on). A full stop
/// inside a token (3.5, web-01.example.com) is never an end.
fn en_end(chars: &[char], i: usize) -> Option<usize> {
    let c = chars[i];
    if !matches!(c, '.' | '!' | '?') {
        return None;
    }
    let mut j = i + 1;
    while j < chars.len() && matches!(chars[j], '.' | '!' | '?') {
        j += 1;
    }
    let j = after_closers(chars, j);
    if j < chars.len() && !chars[j].is_whitespace() {
        return None;
    }
    let next = chars[j..].iter().find(|c| !c.is_whitespace());
    if next.is_some_and(|n| n.is_lowercase()) {
        return None;
    }
    if c == '.' && j == i + 1 {
        // The word the full stop ends.
        let word_start = chars[..i]
            .iter()
            .rposition(|c| c.is_whitespace() || matches!(c, '(' | '"' | '“'))
            .map_or(0, |p| p + 1);
        let word: String = chars[word_start..i]
            .iter()
            .collect::<String>()
            .to_lowercase();
        if word.chars().count() == 1 && word.chars().all(char::is_alphabetic) {
            // An initial: "J. Smith".
            return None;
        }
        if ABBREVIATIONS.contains(&word.as_str()) && next.is_some() {
            return None;
        }
    }
    Some(j)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn japanese_ends_at_full_stops_marks_and_lines() {
        assert_eq!(
            split(
                "ACME社の障害通知です。ウェブサーバが応答しません！確認できますか？\n対応をお願いします",
                Language::Ja
            ),
            [
                "ACME社の障害通知です。",
                "ウェブサーバが応答しません！",
                "確認できますか？",
                "対応をお願いします"
            ]
        );
    }

    #[test]
    fn japanese_keeps_numbers_hosts_and_closing_brackets() {
        assert_eq!(
            split(
                "負荷は3.5です。「web-01.example.com」が止まりました。」次です。。",
                Language::Ja
            ),
            [
                "負荷は3.5です。",
                "「web-01.example.com」が止まりました。」",
                "次です。。"
            ]
        );
    }

    #[test]
    fn japanese_doubled_marks_are_one_ending() {
        assert_eq!(
            split("大変です！？すぐに。", Language::Ja),
            ["大変です！？", "すぐに。"]
        );
    }

    #[test]
    fn english_ends_at_marks_followed_by_space() {
        assert_eq!(
            split(
                "The web server is down! Is the database up? Load is 3.5 on web-01.example.com. Call now.",
                Language::En
            ),
            [
                "The web server is down!",
                "Is the database up?",
                "Load is 3.5 on web-01.example.com.",
                "Call now."
            ]
        );
    }

    #[test]
    fn english_keeps_abbreviations_and_initials() {
        assert_eq!(
            split(
                "Dr. Smith and J. Doe e.g. the on-call team. Version 2.0 etc. are fine. It ended at 3 p.m. Done.",
                Language::En
            ),
            [
                "Dr. Smith and J. Doe e.g. the on-call team.",
                "Version 2.0 etc. are fine.",
                "It ended at 3 p.m. Done."
            ]
        );
    }

    #[test]
    fn english_lower_case_after_a_stop_goes_on_and_quotes_close() {
        assert_eq!(
            split(
                "He said \"stop.\" Then it failed... and came back. \"Really?\" Yes.",
                Language::En
            ),
            [
                "He said \"stop.\"",
                "Then it failed... and came back.",
                "\"Really?\"",
                "Yes."
            ]
        );
    }

    #[test]
    fn a_first_sentence_splits_at_its_first_clause_then_grows() {
        // The bench's first sentence with its host spelled: the first
        // chunk is the first clause, the rest is within 3x of it.
        assert_eq!(
            chunks(
                "ホストダブリュー、イー、ビー、イチで重大な障害が発生しました。",
                Language::Ja
            ),
            [
                "ホストダブリュー、",
                "イー、ビー、イチで重大な障害が発生しました。"
            ]
        );
        // A long rest is split again, each chunk at most 3x all before it.
        let long = "本日、データベースの障害が、東京と大阪の両方のデータセンターで、\
            ほぼ同時に発生し、現在も多くのお客様がサービスを利用できない状態が続いています。";
        let c = chunks(long, Language::Ja);
        assert_eq!(
            c,
            [
                "本日、データベースの障害が、",
                "東京と大阪の両方のデータセンターで、ほぼ同時に発生し、",
                "現在も多くのお客様がサービスを利用できない状態が続いています。"
            ]
        );
        let mut before = 0;
        for (k, x) in c.iter().enumerate() {
            if k > 0 {
                assert!(speakable(x) <= GROW * before, "{k}: {x}");
            }
            before += speakable(x);
        }
    }

    #[test]
    fn short_clauses_join_and_numbers_are_not_clauses() {
        // A first clause under four characters joins the next.
        assert_eq!(
            chunks("はい、障害です、すぐ対応してください。", Language::Ja),
            ["はい、障害です、", "すぐ対応してください。"]
        );
        // A short last clause joins the chunk before.
        assert_eq!(
            chunks("ウェブサーバが止まりました、今。", Language::Ja),
            ["ウェブサーバが止まりました、今。"]
        );
        // No boundary, a thousands separator, a comma with no space (en).
        assert_eq!(
            chunks("約1,000名のお客様に影響があります。", Language::Ja),
            ["約1,000名のお客様に影響があります。"]
        );
        // Full-width digits and comma: a number too, read whole.
        assert_eq!(
            chunks("エラー件数１，２３４件を検出しました。", Language::Ja),
            ["エラー件数１，２３４件を検出しました。"]
        );
        assert_eq!(
            chunks("Load is 1,500 on web,db now.", Language::En),
            ["Load is 1,500 on web,db now."]
        );
        assert_eq!(
            chunks(
                "The web server on host web zero one is down, and the database is not answering.",
                Language::En
            ),
            [
                "The web server on host web zero one is down,",
                "and the database is not answering."
            ]
        );
        // Closing marks stay with their clause.
        assert_eq!(
            chunks(
                "「ウェブサーバ」、「データベース」が停止しました。",
                Language::Ja
            ),
            ["「ウェブサーバ」、", "「データベース」が停止しました。"]
        );
    }

    #[test]
    fn chunks_keep_every_character() {
        for (text, lang) in [
            ("", Language::Ja),
            ("、、、", Language::Ja),
            ("あ、い、う、え、お、か、き、く、け、こ。", Language::Ja),
            (", , ,", Language::En),
            (
                "One, two, three, four, five, six, seven, eight.",
                Language::En,
            ),
            ("「一」、「二」、（三）、四。", Language::Ja),
        ] {
            let c = chunks(text, lang);
            assert!(c.iter().all(|x| !x.trim().is_empty()), "{text:?}: {c:?}");
            let joined: String = c.concat().chars().filter(|c| !c.is_whitespace()).collect();
            let orig: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            assert_eq!(joined, orig, "{text:?}: {c:?}");
        }
    }

    #[test]
    fn nothing_is_lost_and_nothing_is_empty() {
        for (text, lang) in [
            ("", Language::En),
            ("   ", Language::Ja),
            ("。。。", Language::Ja),
            ("...", Language::En),
            ("no stop at all", Language::En),
            ("\n\n文。\n\n", Language::Ja),
            ("A. B. C.", Language::En),
        ] {
            let s = split(text, lang);
            assert!(s.iter().all(|x| !x.trim().is_empty()), "{text:?}: {s:?}");
            let joined: String = s.concat().chars().filter(|c| !c.is_whitespace()).collect();
            let orig: String = text.chars().filter(|c| !c.is_whitespace()).collect();
            assert_eq!(joined, orig, "{text:?}: {s:?}");
        }
    }
}
