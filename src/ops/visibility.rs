//! Which projects a caller may see, and the one place an optional `project` argument is resolved
//! against it. The MCP meta endpoint and the CLI see every project; a project endpoint (HTTP or stdio)
//! sees only its own, whatever its arguments say.

use crate::state::Desired;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Visibility {
    /// Every project (the meta endpoint, the CLI).
    All,
    /// One project only.
    Project(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VisibilityError {
    #[error("this endpoint serves project `{own}` only; project `{given}` is not visible here")]
    OtherProject { own: String, given: String },
    #[error("name the project: this is the meta endpoint, which serves every project")]
    ProjectRequired,
    #[error("there is no project `{name}` (known: {known})")]
    Unknown { name: String, known: String },
    #[error("`{given}` is not a project name ({hint})", hint = crate::state::NAME_HINT)]
    NotAName { given: String },
}

impl Visibility {
    /// The one project visible, if only one is.
    pub fn project(&self) -> Option<&str> {
        match self {
            Visibility::All => None,
            Visibility::Project(p) => Some(p),
        }
    }

    pub fn sees(&self, project: &str) -> bool {
        self.project().is_none_or(|p| p == project)
    }

    /// The project a call about one project is about: the argument, confined to what is visible; a
    /// project endpoint defaults to its own.
    pub fn one(&self, given: Option<String>) -> Result<String, VisibilityError> {
        match (self, given) {
            (Visibility::Project(own), None) => Ok(own.clone()),
            (Visibility::Project(own), Some(g)) if g == *own => Ok(g),
            (Visibility::Project(own), Some(given)) => Err(VisibilityError::OtherProject {
                own: own.clone(),
                given,
            }),
            (Visibility::All, Some(g)) if crate::state::is_valid_name(&g) => Ok(g),
            (Visibility::All, Some(given)) => Err(VisibilityError::NotAName { given }),
            (Visibility::All, None) => Err(VisibilityError::ProjectRequired),
        }
    }

    /// The projects a call that may cover several is about: `None` = every project (only when every
    /// project is visible), otherwise one.
    pub fn filter(&self, given: Option<String>) -> Result<Option<String>, VisibilityError> {
        match (self, given) {
            (Visibility::All, None) => Ok(None),
            (own, given) => own.one(given).map(Some),
        }
    }

    /// Like [`Visibility::one`], and the project must exist in `desired`.
    pub fn known(
        &self,
        desired: &Desired,
        given: Option<String>,
    ) -> Result<String, VisibilityError> {
        let name = self.one(given)?;
        check_known(desired, &name)?;
        Ok(name)
    }

    /// Like [`Visibility::filter`], and a named project must exist in `desired`.
    pub fn known_filter(
        &self,
        desired: &Desired,
        given: Option<String>,
    ) -> Result<Option<String>, VisibilityError> {
        let name = self.filter(given)?;
        if let Some(n) = &name {
            check_known(desired, n)?;
        }
        Ok(name)
    }
}

fn check_known(desired: &Desired, name: &str) -> Result<(), VisibilityError> {
    if desired.projects.contains_key(name) {
        return Ok(());
    }
    let known: Vec<&str> = desired.projects.keys().map(String::as_str).collect();
    Err(VisibilityError::Unknown {
        name: name.to_string(),
        known: if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_project_endpoint_is_confined_to_its_project() {
        let v = Visibility::Project("shop".into());
        assert_eq!(v.one(None).unwrap(), "shop");
        assert_eq!(v.one(Some("shop".into())).unwrap(), "shop");
        assert_eq!(
            v.one(Some("blog".into())).unwrap_err().to_string(),
            "this endpoint serves project `shop` only; project `blog` is not visible here"
        );
        assert_eq!(v.filter(None).unwrap(), Some("shop".into()));
        assert!(v.filter(Some("blog".into())).is_err());
    }

    #[test]
    fn the_meta_endpoint_sees_everything_but_needs_a_name_for_one() {
        let v = Visibility::All;
        assert_eq!(v.one(None), Err(VisibilityError::ProjectRequired));
        assert_eq!(v.filter(None).unwrap(), None);
        assert_eq!(v.filter(Some("blog".into())).unwrap(), Some("blog".into()));
        // A name that cannot be a project's is refused before it is looked up anywhere.
        for bad in ["blog\0", "../blog", "Blog", ""] {
            assert_eq!(
                v.filter(Some(bad.into())),
                Err(VisibilityError::NotAName { given: bad.into() })
            );
        }
    }
}
