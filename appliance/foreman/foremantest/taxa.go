package foremantest

import (
	"net/http"
	"strings"
)

type user struct {
	Login, Password string
	Admin           bool
}

func (f *Fixture) taxonomyJSON(kind string, id int) map[string]any {
	name := f.taxa[kind][id]
	return map[string]any{"id": id, "name": name, "title": name, "description": nil}
}

func (f *Fixture) taxonomyIndex(kind string) func(http.ResponseWriter, *http.Request, map[string]any) {
	return func(w http.ResponseWriter, r *http.Request, _ map[string]any) {
		want, filter := searchTerm(r, "name")
		var out []any
		for _, id := range sortedIDs(f.taxa[kind]) {
			if !filter || f.taxa[kind][id] == want {
				out = append(out, f.taxonomyJSON(kind, id))
			}
		}
		index(w, r, len(f.taxa[kind]), out)
	}
}

func (f *Fixture) taxonomyCreate(kind, singular string) func(http.ResponseWriter, *http.Request, map[string]any) {
	return func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		name, _ := str(attrs(body, singular), "name")
		if !f.taxonomyValid(w, kind, 0, name) {
			return
		}
		id := f.id()
		f.taxa[kind][id] = name
		writeJSON(w, http.StatusCreated, f.taxonomyJSON(kind, id))
	}
}

func (f *Fixture) taxonomyUpdate(kind, singular string) func(http.ResponseWriter, *http.Request, map[string]any) {
	return func(w http.ResponseWriter, r *http.Request, body map[string]any) {
		id := pathID(r)
		if _, ok := f.taxa[kind][id]; !ok {
			notFound(w, singular, r.PathValue("id"))
			return
		}
		if name, ok := str(attrs(body, singular), "name"); ok {
			if !f.taxonomyValid(w, kind, id, name) {
				return
			}
			f.taxa[kind][id] = name
		}
		writeJSON(w, http.StatusOK, f.taxonomyJSON(kind, id))
	}
}

func (f *Fixture) taxonomyValid(w http.ResponseWriter, kind string, id int, name string) bool {
	switch {
	case strings.TrimSpace(name) == "":
		invalid(w, nilID(id), map[string][]string{"name": {"can't be blank"}}, []string{"Name can't be blank"})
	case taken(f.taxa[kind], id, name, func(s string) string { return s }):
		invalid(w, nilID(id), map[string][]string{"name": {"has already been taken"}}, []string{"Name has already been taken"})
	default:
		return true
	}
	return false
}

// nilID is a 422's id: null for a new record.
func nilID(id int) any {
	if id == 0 {
		return nil
	}
	return id
}

func (f *Fixture) userIndex(w http.ResponseWriter, r *http.Request, _ map[string]any) {
	want, filter := searchTerm(r, "login")
	var out []any
	for _, id := range sortedIDs(f.users) {
		u := f.users[id]
		if !filter || u.Login == want {
			out = append(out, map[string]any{"id": id, "login": u.Login, "admin": u.Admin, "auth_source_name": "Internal"})
		}
	}
	index(w, r, len(f.users), out)
}

func (f *Fixture) userUpdate(w http.ResponseWriter, r *http.Request, body map[string]any) {
	id := pathID(r)
	u, ok := f.users[id]
	if !ok {
		notFound(w, "user", r.PathValue("id"))
		return
	}
	a := attrs(body, "user")
	if pw, ok := str(a, "password"); ok {
		login, _, _ := r.BasicAuth()
		cur, _ := str(a, "current_password")
		if login == u.Login && cur != u.Password {
			invalid(w, id, map[string][]string{"current_password": {"Incorrect password"}}, []string{"Current password Incorrect password"})
			return
		}
		if c, ok := str(a, "password_confirmation"); ok && c != pw {
			invalid(w, id, map[string][]string{"password_confirmation": {"doesn't match Password"}}, []string{"Password confirmation doesn't match Password"})
			return
		}
		u.Password = pw
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "login": u.Login, "admin": u.Admin})
}

func (f *Fixture) settingShow(w http.ResponseWriter, r *http.Request, _ map[string]any) {
	name := r.PathValue("name")
	v, ok := f.setting[name]
	if !ok {
		notFound(w, "setting", name)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": name, "value": v, "id": name})
}

func (f *Fixture) settingUpdate(w http.ResponseWriter, r *http.Request, body map[string]any) {
	name := r.PathValue("name")
	if _, ok := f.setting[name]; !ok {
		notFound(w, "setting", name)
		return
	}
	v := attrs(body, "setting")["value"]
	// Foreman 3.12 takes any string here, even a name no organization has.
	f.setting[name] = v
	writeJSON(w, http.StatusOK, map[string]any{"name": name, "value": v, "id": name})
}
