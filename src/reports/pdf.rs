//! The monthly quality report as a PDF, made in-process with krilla
//! (pure Rust: no browser, no external tool at run time).
//!
//! The font: IPAGothic from Debian's
//! `fonts-ipafont-gothic`, read at run time from its Debian path (or the
//! file `CALLOUT_PDF_FONT` names), not built into the binary: it is
//! 6 MB, the package keeps it patched, and the IPA licence's terms are
//! easier met by the distribution's copy than by a copy in our binary.
//! krilla embeds the subset of glyphs a report uses, with a ToUnicode
//! map, so the text is searchable and `pdftotext` reads it back.

use std::sync::{Arc, OnceLock};

use krilla::color::rgb;
use krilla::geom::{PathBuilder, Point, Rect};
use krilla::page::PageSettings;
use krilla::paint::{Fill, Stroke};
use krilla::surface::Surface;
use krilla::text::{Font, TextDirection};
use krilla::Document;

use super::quality::Text;

/// Where the Japanese font is looked for, in order.
pub const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf",
    "/usr/share/fonts/truetype/fonts-japanese-gothic.ttf",
];

/// A PDF that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PdfError {
    #[error("no Japanese font: install fonts-ipafont-gothic, or set CALLOUT_PDF_FONT to a TrueType file")]
    NoFont,
    #[error("the PDF could not be written: {0}")]
    Write(String),
}

fn load_font() -> Option<Font> {
    let env = std::env::var("CALLOUT_PDF_FONT").ok();
    let paths = env
        .iter()
        .map(String::as_str)
        .chain(FONT_PATHS.iter().copied());
    for p in paths {
        if let Ok(bytes) = std::fs::read(p) {
            if let Some(f) = Font::new(Arc::new(bytes).into(), 0) {
                return Some(f);
            }
            tracing::warn!(path = p, "not a usable font file");
        }
    }
    None
}

/// The font, read once per process.
fn font() -> Result<Font, PdfError> {
    static FONT: OnceLock<Option<Font>> = OnceLock::new();
    FONT.get_or_init(load_font).clone().ok_or(PdfError::NoFont)
}

const W: f32 = 595.0;
const H: f32 = 842.0;
const MARGIN: f32 = 48.0;

/// At most `n` characters (a contract name longer than its column).
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(n.saturating_sub(1)).collect();
        c.push('…');
        c
    }
}

struct Pen<'a, 'b> {
    s: &'a mut Surface<'b>,
    font: Font,
}

impl Pen<'_, '_> {
    fn text(&mut self, x: f32, y: f32, size: f32, t: &str) {
        if t.is_empty() {
            return;
        }
        self.s.set_fill(Some(Fill::default()));
        self.s.draw_text(
            Point::from_xy(x, y),
            self.font.clone(),
            size,
            t,
            false,
            TextDirection::Auto,
        );
    }

    fn rule(&mut self, y: f32) {
        let mut pb = PathBuilder::new();
        pb.move_to(MARGIN, y);
        pb.line_to(W - MARGIN, y);
        if let Some(p) = pb.finish() {
            self.s.set_fill(None);
            self.s.set_stroke(Some(Stroke {
                paint: rgb::Color::new(150, 150, 150).into(),
                width: 0.5,
                ..Default::default()
            }));
            self.s.draw_path(&p);
            self.s.set_stroke(None);
        }
    }

    fn band(&mut self, y: f32, h: f32) {
        let mut pb = PathBuilder::new();
        if let Some(r) = Rect::from_xywh(MARGIN, y, W - 2.0 * MARGIN, h) {
            pb.push_rect(r);
        }
        if let Some(p) = pb.finish() {
            self.s.set_fill(Some(Fill {
                paint: rgb::Color::new(232, 236, 242).into(),
                ..Default::default()
            }));
            self.s.draw_path(&p);
        }
    }
}

/// Render the report's text (in the language it was made in) as an A4
/// PDF of one page (a year of months fits).
pub fn render(t: &Text) -> Result<Vec<u8>, PdfError> {
    let font = font()?;
    let mut doc = Document::new();
    {
        let settings = PageSettings::from_wh(W, H).ok_or(PdfError::Write("page size".into()))?;
        let mut page = doc.start_page_with(settings);
        let mut surface = page.surface();
        let mut pen = Pen {
            s: &mut surface,
            font,
        };
        let mut y = MARGIN + 18.0;
        pen.text(MARGIN, y, 17.0, &clip(&t.title, 48));
        y += 20.0;
        pen.text(MARGIN, y, 11.0, &t.subtitle);
        y += 10.0;
        pen.rule(y);
        y += 22.0;
        for (k, v) in &t.figures {
            pen.text(MARGIN, y, 10.5, k);
            pen.text(MARGIN + 260.0, y, 10.5, &clip(v, 40));
            y += 17.0;
        }
        y += 6.0;
        pen.rule(y);
        y += 20.0;
        pen.text(MARGIN, y, 11.0, &t.target);
        y += 16.0;
        // The attainment table.
        let cols = [0.0, 62.0, 132.0, 212.0, 282.0, 340.0, 410.0];
        pen.band(y, 18.0);
        for (i, h) in t.header.iter().enumerate() {
            pen.text(
                MARGIN + 4.0 + cols[i.min(cols.len() - 1)],
                y + 13.0,
                8.5,
                &clip(h, 14),
            );
        }
        y += 18.0;
        for row in &t.rows {
            y += 15.0;
            if y > H - MARGIN {
                break;
            }
            for (i, cell) in row.iter().enumerate() {
                pen.text(
                    MARGIN + 4.0 + cols[i.min(cols.len() - 1)],
                    y,
                    9.0,
                    &clip(cell, 20),
                );
            }
        }
        y += 8.0;
        pen.rule(y);
        surface.finish();
        page.finish();
    }
    doc.finish().map_err(|e| PdfError::Write(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_clipped_by_characters() {
        assert_eq!(clip("acme", 10), "acme");
        assert_eq!(clip("監視センター全体の契約", 5), "監視セン…");
    }
}
