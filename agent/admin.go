package agent

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/passbridge/passbridge/agent/metrics"
	"github.com/passbridge/passbridge/dirsync"
	"github.com/passbridge/passbridge/internal/httpjson"
)

// Runs is one page of GET /api/v1/runs.
type Runs struct {
	Runs []dirsync.RunRecord `json:"runs"`
	// Next is the URL of the following (older) page, absent on the last.
	Next string `json:"next,omitempty"`
}

const (
	maxAPIBody      = 4 << 10
	defaultRunsPage = 50
	maxRunsPage     = 500
)

func (a *Agent) registerAdmin(e *echo.Echo) {
	g := e.Group("/api/v1", a.requireToken)
	g.POST("/sync", a.apiSync)
	g.GET("/runs", a.apiRuns)
	g.GET("/schedule", a.apiSchedule)
	// Anything else under /api is a JSON 404, after authentication, so the
	// API's shape is not disclosed to callers without the token.
	g.Any("/*", func(c echo.Context) error { return echo.ErrNotFound })
}

// apiSync runs one sync through the same Runner as the schedule and the CLI.
// The sync is not tied to the request: a client that hangs up does not
// abort a run half-way; it still finishes and lands in the history.
func (a *Agent) apiSync(c echo.Context) error {
	var req SyncRequest
	if err := httpjson.Decode(c.Response(), c.Request(), maxAPIBody, &req); err != nil {
		return err
	}
	req.Trigger = TriggerAPI
	a.log.Info("admin API: sync requested", "remote", c.Request().RemoteAddr, "full", req.Full, "dry_run", req.DryRun)
	// A sync can outlast the server's write timeout; this response waits
	// for it.
	if err := http.NewResponseController(c.Response().Writer).SetWriteDeadline(time.Time{}); err != nil {
		a.log.Debug("cannot lift the write deadline", "err", err)
	}
	res, waited := a.runDetached(c.Request().Context(), req)
	if !waited {
		// Nobody is left to answer; the run still lands in the history.
		a.log.Info("admin API client left; the sync it started goes on", "kind", req.Kind())
		return nil
	}
	switch {
	case errors.Is(res.err, ErrClosed):
		return echo.NewHTTPError(http.StatusServiceUnavailable, res.err.Error())
	case errors.Is(res.err, dirsync.ErrBusy):
		return echo.NewHTTPError(http.StatusConflict, res.err.Error())
	case errors.Is(res.err, errAlreadyDone):
		// Not reachable for API requests (no tick), but never a 500.
		return echo.NewHTTPError(http.StatusConflict, "already done")
	}
	var le *lockError
	if errors.As(res.err, &le) {
		return echo.NewHTTPError(http.StatusServiceUnavailable, res.err.Error())
	}
	body := res.response()
	if res.err != nil {
		if errors.Is(res.err, context.Canceled) && a.runCtx.Err() != nil {
			body.Status = metrics.ResultAborted
			return c.JSON(http.StatusServiceUnavailable, body)
		}
		if body.Status == metrics.ResultRefused {
			// The request was fine; the deletion guard said no.
			return c.JSON(http.StatusUnprocessableEntity, body)
		}
		// The directory or the database failed: an upstream fault.
		return c.JSON(http.StatusBadGateway, body)
	}
	return c.JSON(http.StatusOK, body)
}

// apiRuns lists the sync history, newest first, by pages: ?limit=N
// (default 50, at most 500) and ?before=ID for the page after a given run.
func (a *Agent) apiRuns(c echo.Context) error {
	limit := defaultRunsPage
	if s := c.QueryParam("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxRunsPage {
			return badRequest("limit: expected a whole number from 1 to %d (got %q)", maxRunsPage, s)
		}
		limit = n
	}
	var before int64
	if s := c.QueryParam("before"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return badRequest("before: expected a run id, a whole number from 1 (got %q)", s)
		}
		before = n
	}
	// One more than asked tells whether another page follows.
	runs, err := a.db.ListRuns(c.Request().Context(), before, limit+1)
	if err != nil {
		a.metrics.DBError("query")
		return echo.NewHTTPError(http.StatusServiceUnavailable, "cannot read the sync history: the database did not answer").SetInternal(err)
	}
	page := Runs{Runs: runs}
	if len(runs) > limit {
		page.Runs = runs[:limit]
		page.Next = "/api/v1/runs?limit=" + strconv.Itoa(limit) + "&before=" + strconv.FormatInt(runs[limit-1].ID, 10)
	}
	if page.Runs == nil {
		page.Runs = []dirsync.RunRecord{}
	}
	return c.JSON(http.StatusOK, page)
}

// apiSchedule shows the schedules with their next two run times.
func (a *Agent) apiSchedule(c echo.Context) error {
	return c.JSON(http.StatusOK, a.ScheduleNow())
}
