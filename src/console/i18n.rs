//! The console's two languages. The page's language comes from the
//! `callout_lang` cookie (set by the language switch), else from the
//! browser's `Accept-Language`, else English.

use axum::http::{header, HeaderMap};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    En,
    Ja,
}

impl Lang {
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ja => "ja",
        }
    }
}

pub const COOKIE: &str = "callout_lang";

/// The language a request asks for.
pub fn of_request(headers: &HeaderMap) -> Lang {
    match super::session::cookie(headers, COOKIE) {
        Some("ja") => return Lang::Ja,
        Some("en") => return Lang::En,
        _ => {}
    }
    let accept = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Highest q first; the first of ja / en wins.
    let mut langs: Vec<(f32, &str)> = accept
        .split(',')
        .filter_map(|part| {
            let mut it = part.split(';');
            let tag = it.next()?.trim();
            let q = it
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            Some((q, tag))
        })
        .collect();
    langs.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    for (_, tag) in langs {
        let t = tag.to_ascii_lowercase();
        if t.starts_with("ja") {
            return Lang::Ja;
        }
        if t.starts_with("en") {
            return Lang::En;
        }
    }
    Lang::En
}

/// One phrase of the console.
pub fn t(lang: Lang, key: &str) -> &'static str {
    let (en, ja) = match key {
        "title" => ("callout console", "callout コンソール"),
        "board" => ("Live board", "ライブボード"),
        "incidents" => ("Incidents", "インシデント"),
        "notifications" => ("Notifications in progress", "進行中の通知"),
        "contracts" => ("Contracts", "契約"),
        "analytics" => ("Analytics", "分析"),
        "quality" => ("Monthly quality", "月次品質レポート"),
        "sign_in" => ("Sign in", "サインイン"),
        "sign_out" => ("Sign out", "サインアウト"),
        "token" => ("API token", "API トークン"),
        "bad_token" => (
            "That token is not valid here.",
            "このトークンは使えません。",
        ),
        "language" => ("日本語", "English"),
        "calling" => ("calling", "呼出中"),
        "ringing" => ("ringing", "着信中"),
        "talking" => ("talking", "通話中"),
        "since" => ("since", "開始"),
        "keys" => ("keys", "押下キー"),
        "none" => ("Nothing in progress.", "進行中のものはありません。"),
        "monitoring" => ("monitoring path", "監視経路"),
        "suppressed" => ("suppressed", "抑止"),
        "timeline" => ("Timeline", "タイムライン"),
        "calls" => ("Calls", "発信"),
        "actions" => ("Actions", "アクション"),
        "cancel" => ("Cancel escalation", "エスカレーション中止"),
        "close" => ("Close incident", "インシデントをクローズ"),
        "ack_for" => (
            "Acknowledge for someone on the phone",
            "電話で受けた人の代わりに応答",
        ),
        "dry_run" => ("Dry run", "ドライラン"),
        "confirm" => ("Run it", "実行する"),
        "ticket" => ("Ticket", "チケット"),
        "contract" => ("Contract", "契約"),
        "host" => ("Host", "ホスト"),
        "state" => ("State", "状態"),
        "summary" => ("Summary", "概要"),
        "contacts" => ("Contacts in order", "連絡順"),
        "reachable" => ("reachable now", "現在連絡可"),
        "unreachable" => ("outside their hours", "時間外"),
        "rounds" => ("Rounds and timings", "周回とタイミング"),
        "menu" => ("Key menu", "キーメニュー"),
        "reload" => ("Reload dialplans", "ダイヤルプラン再読込"),
        "valid" => (
            "All dialplans are valid.",
            "すべてのダイヤルプランは有効です。",
        ),
        "errors" => ("Validation errors", "検証エラー"),
        "from" => ("From", "開始日"),
        "to" => ("To", "終了日"),
        "apply" => ("Apply", "適用"),
        "all" => ("all", "すべて"),
        "answer_rate" => ("Answer rate", "応答率"),
        "ack_median" => ("Time to acknowledge, median", "応答までの時間（中央値）"),
        "ack_p90" => (
            "Time to acknowledge, p90",
            "応答までの時間（90パーセンタイル）",
        ),
        "unanswered" => ("Unanswered calls", "不応答の発信"),
        "abandoned" => ("Answered, no key", "応答したがキーなし"),
        "machine" => ("Machine-answered", "留守電応答"),
        "depth" => ("Escalation depth (mean)", "エスカレーション深さ（平均）"),
        "sip_failures" => ("SIP failure codes", "SIP 失敗コード"),
        "actions_run" => ("Actions run / succeeded", "実行アクション / 成功"),
        "by_hour" => ("By hour of day", "時間帯別"),
        "by_weekday" => ("By day of week", "曜日別"),
        "by_contract" => ("By contract", "契約別"),
        "by_contact" => ("By contact", "連絡先別"),
        "notif_count" => ("Notifications", "通知数"),
        "call_count" => ("Calls", "発信数"),
        "target" => ("Target", "目標"),
        "attainment" => ("Attainment", "達成率"),
        "month" => ("Month", "月"),
        "met" => ("met", "達成"),
        "missed" => ("missed", "未達"),
        "print" => ("Print / save as PDF", "印刷 / PDF 保存"),
        "whole_centre" => ("whole centre", "センター全体"),
        "acknowledged_count" => ("Acknowledged", "応答数"),
        "within_target" => ("Within target time", "目標時間内"),
        "result" => ("Result", "結果"),
        "pdf" => ("PDF", "PDF"),
        "by_period" => ("Business / off / sleep hours", "営業時間 / 時間外 / 深夜"),
        "business" => ("business hours", "営業時間"),
        "off" => ("off hours", "時間外"),
        "sleep" => ("sleep hours", "深夜"),
        "not_found" => ("Not found.", "見つかりません。"),
        "read_only" => ("read-only", "閲覧のみ"),
        "events" => ("Events", "イベント"),
        "outcome" => ("Outcome", "結果"),
        "who" => ("Who", "誰"),
        "until" => ("until", "終了"),
        "opens" => ("window opens", "開始"),
        "reachable_now" => ("Reachable now", "現在連絡可能"),
        "next_window" => ("Next window opens", "次に連絡可能になる人"),
        "nobody" => ("nobody", "なし"),
        "phrases" => ("Fixed phrases", "固定フレーズ"),
        "message_audio" => ("The message callees hear", "発信先が聞くメッセージ"),
        "acknowledged" => ("acknowledged", "応答済み"),
        "ack_who" => (
            "Who acknowledged on the phone?",
            "電話で応答したのは誰ですか？",
        ),
        "run" => ("Run", "実行"),
        "progress" => ("Progress", "進捗"),
        _ => ("?", "?"),
    };
    match lang {
        Lang::En => en,
        Lang::Ja => ja,
    }
}

/// The phrases the script needs, as a JSON object.
pub fn script_phrases(lang: Lang) -> String {
    let keys = [
        "calling",
        "ringing",
        "talking",
        "since",
        "keys",
        "none",
        "monitoring",
        "suppressed",
        "dry_run",
        "confirm",
        "cancel",
        "ack_for",
        "close",
        "ticket",
        "outcome",
        "who",
        "acknowledged",
        "ack_who",
        "progress",
    ];
    let m: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|k| (k.to_string(), serde_json::Value::from(t(lang, k))))
        .collect();
    serde_json::Value::Object(m).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_language() {
        let mut h = HeaderMap::new();
        assert_eq!(of_request(&h), Lang::En);
        h.insert(
            header::ACCEPT_LANGUAGE,
            "fr;q=1, ja-JP;q=0.8, en;q=0.5".parse().unwrap(),
        );
        assert_eq!(of_request(&h), Lang::Ja);
        h.insert(header::COOKIE, "callout_lang=en".parse().unwrap());
        assert_eq!(of_request(&h), Lang::En);
    }
}
