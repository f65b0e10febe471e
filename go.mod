module echod

go 1.26
