//! A fresh PostgreSQL database per test, made through the admin URL in
//! `CALLOUT_TEST_POSTGRES_URL` and dropped at the end.

use sqlx::Connection;

pub struct ScratchDb {
    /// Where the store under test connects.
    pub url: String,
    name: String,
    admin: sqlx::PgConnection,
}

impl ScratchDb {
    /// Create database `name` (dropped first if a killed run left it).
    /// `None`, with a loud SKIPPED line naming `test`, when the variable
    /// is unset.
    pub async fn create(test: &str, name: &str) -> Option<ScratchDb> {
        let Ok(admin_url) = std::env::var("CALLOUT_TEST_POSTGRES_URL") else {
            eprintln!("\n*** SKIPPED {test}: set CALLOUT_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1:5432/test) ***\n");
            return None;
        };
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("PostgreSQL reachable");
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::query(&sql).execute(&mut admin).await.unwrap();
        }
        let url = match admin_url.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("CALLOUT_TEST_POSTGRES_URL must end with /DATABASE"),
        };
        Some(ScratchDb {
            url,
            name: name.to_string(),
            admin,
        })
    }

    /// Drop the database, closing whatever still holds it.
    pub async fn drop_db(mut self) {
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut self.admin)
        .await
        .unwrap();
    }
}
