package agent

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/admintoken"
)

// AdminTokens is the daemon's admin token guard: the token of the current
// configuration (a reload rotates it), wrong tokens limited per address
// (portal.rate_limits.password_per_user per password_window) and audited.
// The console checks tokens with it too.
func (a *Agent) AdminTokens() *admintoken.Guard { return a.tokens }

func (a *Agent) tokenSettings() admintoken.Settings {
	cfg := a.config()
	return admintoken.Settings{Token: cfg.Admin.Token.Reveal(), Limit: cfg.Portal.RateLimits.PasswordPerUser, Window: cfg.Portal.RateLimits.PasswordWindow.D()}
}

// requireToken guards the admin API with "Authorization: Bearer <token>",
// checked by the admin token guard.
func (a *Agent) requireToken(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if a.config().Admin.Token.Reveal() == "" {
			return echo.NewHTTPError(http.StatusForbidden, "the admin API is disabled: set admin.token or admin.token_file (or PASSBRIDGE_ADMIN_TOKEN) to enable it")
		}
		auth := c.Request().Header.Get(echo.HeaderAuthorization)
		if auth == "" {
			return echo.NewHTTPError(http.StatusUnauthorized, "missing Authorization: Bearer <admin token>")
		}
		scheme, got, ok := strings.Cut(auth, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return echo.NewHTTPError(http.StatusUnauthorized, "the Authorization header must be: Bearer <admin token>")
		}
		_, err := a.tokens.Check(c.Request().Context(), admintoken.Attempt{Token: strings.TrimSpace(got), Addr: c.RealIP(),
			UserAgent: c.Request().UserAgent(), Where: "/api/v1"})
		var lim *admintoken.LimitedError
		switch {
		case err == nil:
			return next(c)
		case errors.As(err, &lim):
			c.Response().Header().Set("Retry-After", strconv.Itoa(int(lim.Retry.Seconds())))
			return echo.NewHTTPError(http.StatusTooManyRequests, lim.Error())
		case errors.Is(err, admintoken.ErrWrong):
			return echo.NewHTTPError(http.StatusUnauthorized, "wrong admin token")
		case errors.Is(err, admintoken.ErrOff):
			return echo.NewHTTPError(http.StatusForbidden, "the admin API is disabled: set admin.token or admin.token_file (or PASSBRIDGE_ADMIN_TOKEN) to enable it")
		}
		a.metrics.DBError("query")
		return echo.NewHTTPError(http.StatusServiceUnavailable, "cannot check the admin token: the database did not answer").SetInternal(err)
	}
}
